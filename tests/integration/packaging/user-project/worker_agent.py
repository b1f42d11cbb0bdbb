"""The user's own module named `worker_agent`."""

NAME = "user's worker_agent"
