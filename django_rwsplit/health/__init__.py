"""Replica health: probes, the per-process monitor and the rotation it keeps."""
