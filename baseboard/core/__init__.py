"""The hardware-neutral core: op interfaces, registry, selection, platform base class, settings."""
