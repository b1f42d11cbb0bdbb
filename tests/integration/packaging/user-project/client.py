"""The user's own module named `client`."""

NAME = "user's client"
