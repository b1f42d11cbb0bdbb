"""The pure domain core."""
