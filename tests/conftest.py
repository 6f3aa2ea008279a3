"""Shared fixtures.

Real captures live in ../shared/data/real beside the repository (see its SOURCES.md) and
are used by reference, never copied in. On a user's fresh clone they are absent: tests
that need them skip with the reason. Under CI (CI=true) they must be there, so a missing
directory fails instead of silently skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("ZEEKNDM_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def real_path(relative: str) -> Path:
    """Path of a real capture under ../shared/data/real; skip (or fail under CI) if absent."""
    path = REAL_DATA / relative
    if not path.exists():
        reason = f"real capture {path} not present (needs ../shared/data/real beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return path


@pytest.fixture
def real():
    """`real("zeek/zat/conn.log")` -> Path, skipping cleanly outside CI when absent."""
    return real_path


@pytest.fixture
def es():
    """An Elasticsearch-compatible server on 127.0.0.1 (tests/es_standin.py)."""
    from es_standin import ElasticsearchStandin

    server = ElasticsearchStandin().start()
    yield server
    server.stop()


@pytest.fixture
def kibana():
    """A Kibana stand-in for the saved objects import API."""
    from es_standin import KibanaStandin

    server = KibanaStandin().start()
    yield server
    server.stop()
