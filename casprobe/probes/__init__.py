"""casprobe.probes."""
