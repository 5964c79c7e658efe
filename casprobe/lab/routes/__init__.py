"""casprobe.lab.routes."""
