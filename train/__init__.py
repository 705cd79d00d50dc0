"""The trainer of iba-jax's models (kept out of the library): ``python -m train.main``."""
