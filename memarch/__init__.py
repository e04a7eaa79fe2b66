"""memarch: memory in sequence models, in JAX."""
