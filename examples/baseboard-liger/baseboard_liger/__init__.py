"""Liger Kernel (the ``liger-kernel`` distribution) as a baseboard plugin: its Triton kernels
for RMSNorm, add-then-RMSNorm, rotary embedding and SwiGLU, adapted to baseboard's op
signatures in ``ops.py``."""
