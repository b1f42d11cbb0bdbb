"""taskwire worker agent."""
