"""The user's own package named `server`: taskwire must neither shadow it nor be shadowed by it."""

NAME = "user's server"
