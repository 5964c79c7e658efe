"""``python -m casprobe``."""

from __future__ import annotations

from casprobe.cli import main

if __name__ == "__main__":
    main()
