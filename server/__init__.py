"""taskwire control-plane server."""
