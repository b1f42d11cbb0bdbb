"""What the client, the worker agent and the server share: states, reason codes, value types, specs, errors."""
