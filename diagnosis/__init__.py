"""Fault-mode library, detectors, correlation, root-cause ranking and recovery playbooks."""
