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
