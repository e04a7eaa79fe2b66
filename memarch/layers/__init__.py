"""memarch.layers."""
