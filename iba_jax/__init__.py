"""iba-jax."""
