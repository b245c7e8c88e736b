"""Simulated AMD and Intel GPU environments for tests on a machine without either."""
