"""memarch.data."""
