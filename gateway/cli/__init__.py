"""Admin commands and the entry point (``audience-gateway``, ``python -m gateway``)."""
