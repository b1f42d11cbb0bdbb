"""taskwire Python SDK."""
