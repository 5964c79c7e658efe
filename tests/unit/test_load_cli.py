"""``casprobe load``: arguments and inputs checked before any Locust process starts; the documented command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casprobe", "load", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _profile(folder: Path) -> Path:
    (folder / "profile.toml").write_text(
        'namespace = "outlook.lab.test"\nservers = ["mb1.lab.test"]\n[resolve]\n"outlook.lab.test" = "127.0.0.10"\n',
        encoding="utf-8",
    )
    return folder


def test_a_missing_lab_profile_is_one_line_and_exit_3(tmp_path: Path) -> None:
    """No profile where --lab points: a clear message naming the file, exit 3, no Locust started, no traceback."""
    done = _load("run", "--lab", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert done.returncode == 3
    assert "profile.toml" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_accounts_file_is_refused_with_its_line(tmp_path: Path) -> None:
    """An accounts file with an inline password column and no reference: refused before the load, with the line."""
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("smtp,user,password_file\nalice@lab.test,LAB\\alice,\n", encoding="utf-8")
    done = _load("run", "--lab", str(_profile(tmp_path)), "--accounts", str(accounts), "--dry-run")
    assert done.returncode == 3
    assert f"{accounts}:2" in done.stderr


def test_dry_run_prints_the_plain_locust_command_lines(tmp_path: Path) -> None:
    """--dry-run: the master's command line (headless, records, CSV, JSON) and one per worker."""
    done = _load(
        "run", "--lab", str(_profile(tmp_path)), "--workers", "2", "--cohorts", "namespace=3,mb1=1", "--dry-run"
    )
    assert done.returncode == 0, done.stderr
    master, *workers = done.stdout.strip().splitlines()
    assert "-m locust -f" in master
    for option in ("--headless", "--master", "--expect-workers 2", "--casprobe-records", "--json-file", "--csv"):
        assert option in master
    assert "--casprobe-cohorts namespace=3,mb1=1" in master
    assert len(workers) == 2
    assert all("--worker --master-host 127.0.0.1" in w for w in workers)
