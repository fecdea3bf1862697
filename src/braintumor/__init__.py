"""Brain tumor detection from MRI slices. Decision support, not a diagnosis."""

__version__ = "0.1.0"
