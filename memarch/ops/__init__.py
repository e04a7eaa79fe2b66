"""memarch.ops."""
