"""Quantization methods: the records their checkpoints load into and the ops they call."""

from .method import QuantMethod
from .records import GroupQuantized

__all__ = ["GroupQuantized", "QuantMethod"]
