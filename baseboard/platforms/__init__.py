"""Built-in platform plugins. Each is declared as an entry point of this distribution in
group ``baseboard.plugins`` and discovered exactly like a third-party plugin.

Detection order: the present platform of highest priority wins. cuda and rocm
(priority 100) exclude each other (ROCm builds of torch set ``torch.version.hip``),
xpu is 90, cpu is 10 and always present. ``BASEBOARD_PLATFORM`` overrides detection.
"""
