"""inits."""
