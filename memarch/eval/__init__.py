"""memarch.eval."""
