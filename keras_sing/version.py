"""The single source of keras_sing's version."""

__version__ = "0.1.0"
