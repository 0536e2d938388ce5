"""Shared pytest configuration: paths every test may need, and clean stops."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout, a `kill`) would end pytest without tearing fixtures down, and
    # the vLLM engines, Prometheus and gateways they started (in their own process groups)
    # would run on. As an interrupt, it stops the session the way Ctrl-C does: teardown runs.
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
