"""Datasets that keras_sing's examples and tests generate (no downloads)."""

from keras_sing.datasets import rde

__all__ = ("rde",)
