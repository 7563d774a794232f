"""Reproducible speed measurements quoted by the README (run as ``python -m benchmarks.<name>``)."""
