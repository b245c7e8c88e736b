"""Kernel code shared by several platforms: torch/ (references), triton/ (CUDA, ROCm, XPU)."""
