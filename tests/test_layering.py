"""The product stays importable and light: the lab, locust and gevent are never imported by it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [p for p in (ROOT / "casprobe").rglob("*.py") if "lab" not in p.relative_to(ROOT / "casprobe").parts]
FORBIDDEN = ("casprobe.lab", "locust", "gevent")


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_product_module_never_imports_lab_locust_or_gevent(path: Path) -> None:
    """No module of the product (casprobe/ outside lab/) imports the lab, locust or gevent at any level."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_importing_casprobe_and_its_cli_loads_no_lab_code() -> None:
    """`import casprobe.cli` (what every command does first) pulls in neither the lab nor starlette."""
    code = (
        "import sys, casprobe, casprobe.cli; "
        "bad = [m for m in sys.modules if m.startswith(('casprobe.lab', 'starlette', 'uvicorn', 'locust', 'gevent'))]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
