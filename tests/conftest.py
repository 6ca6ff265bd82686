"""Shared fixtures. pytest-twisted ships no ``reactor`` fixture, so here is one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import FakeUDPReactor


@pytest.fixture(scope="session")
def reactor() -> Any:
    """The real global reactor, run by pytest-twisted (for the few async tests)."""
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.fixture
def udp_reactor() -> Iterator[FakeUDPReactor]:
    """A fresh fake UDP reactor (a Clock with listenUDP)."""
    yield FakeUDPReactor()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for the whole session (tests/pg.py); skips where
    PostgreSQL or psycopg is missing."""
    from tests import pg

    reason = pg.missing()
    if reason:
        pytest.skip(reason)
    with pg.cluster() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """Where a new, empty state lives, once per backend: an SQLite file, or the URL of
    a new database in :func:`pg_cluster`. Reopening the same location sees the same state."""
    if request.param == "sqlite":
        return tmp_path / "state.sqlite"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()
