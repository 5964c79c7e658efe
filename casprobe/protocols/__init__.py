"""casprobe.protocols."""
