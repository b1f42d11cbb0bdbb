"""Benchmarks of taskwire. Each module runs alone with ``python -m bench.<name>``."""
