"""FlagGems (the ``flag-gems`` distribution) as a baseboard plugin: its Triton kernels for
RMSNorm, add-then-RMSNorm, rotary embedding, SiLU-and-mul and the dense GEMM, adapted to
baseboard's op signatures in ``ops.py``."""
