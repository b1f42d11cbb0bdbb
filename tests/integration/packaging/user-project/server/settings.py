"""The user's settings, imported by their handlers as `server.settings`."""

GREETING = "hello from the user's settings"
