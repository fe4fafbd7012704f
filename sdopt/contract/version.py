"""The sdopt version every artifact records (read by the package face and by pyproject)."""

__version__ = "0.2.0"
