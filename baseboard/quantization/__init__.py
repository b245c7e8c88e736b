"""Quantization methods: the records their checkpoints load into and the ops they call."""

from .method import QuantMethod
from .records import GroupQuantized, QuantizedWeight

__all__ = ["GroupQuantized", "QuantMethod", "QuantizedWeight"]
