"""The IPEX tests build their checkpoints with the model tests' helpers."""

import sys
from pathlib import Path

# tests/models is on sys.path only while its own tests are collected (no packages here)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
