"""casprobe.lab."""
