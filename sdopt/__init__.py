"""sdopt: compress, export and run Stable Diffusion models."""

__version__ = "0.1.0"
