"""Vigil: fault detection, root-cause diagnosis and recovery for AI compute clusters."""

__version__ = "0.1.0"
