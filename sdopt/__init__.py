"""sdopt: compress, export and run Stable Diffusion models."""

__version__ = "0.2.0"
