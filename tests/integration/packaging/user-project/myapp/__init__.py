"""The user's application; `taskwire-worker --handlers myapp.handlers` serves its handlers."""
