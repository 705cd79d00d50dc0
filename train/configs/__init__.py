"""Training configs: each file defines ``get_config()``; variants import the config they vary."""
