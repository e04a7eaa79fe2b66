"""memarch.train."""
