"""An example baseboard plugin package: a GEMM with its own weight layout and a
host-simulated accelerator platform. Copy it to start a plugin of your own."""
