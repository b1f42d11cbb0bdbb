"""Fault tests' shared parts: the checker, the handlers' own journal, scenario helpers."""
