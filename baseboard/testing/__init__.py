"""The conformance kit: every implementation a plugin registers, checked against the
op's torch reference. Run it with ``pytest --baseboard-plugin NAME`` (see
``pytest_plugin.py`` and docs/plugins.md); the case grid is in ``cases.py`` and the
quantizers that make quantized-GEMM inputs are in ``quantize.py``."""
