"""casprobe.net."""
