"""The engine: the one writer of live state, split into rooms by concept."""
