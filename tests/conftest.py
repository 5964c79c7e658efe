"""Shared fixtures: a hermetic environment, and real labs on loopback for the lab and end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.labkit import LabHandle, start_lab

_LEAKY_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CASPROBE_LAB_DIR",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stray proxy or CA variable would silently reroute or re-trust every request: tests run without them."""
    for name in _LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    """A lab shared by the tests that only read from it (no maintenance, no power changes)."""
    saved = {k: os.environ.pop(k) for k in _LEAKY_ENV if k in os.environ}
    handle = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield handle
    finally:
        handle.down()
        os.environ.update(saved)
