"""The lease pool's group commit: one commit on its way to disk at a time."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from pxetwist.config import load_text
from pxetwist.dhcp.leases import LeasePool
from pxetwist.store import LeaseRow, Store


def make_pool(tmp_path: Path) -> tuple[LeasePool, Store, Clock]:
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir()
    config = load_text(
        "[server]\naddress = 10.77.0.1\n[dhcp]\nmode = full\nrange_start = 10.77.0.100\n"
        "range_end = 10.77.0.120\n[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n",
        tmp_path)
    clock = Clock()
    clock.advance(1_000_000)
    store = Store(tmp_path / "state.sqlite")
    pool = LeasePool(config.dhcp, store, clock)
    pool.load()
    return pool, store, clock


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    """Every log event published while the test runs (the global publisher)."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def unhandled(events: list[LogEvent]) -> list[str]:
    """The "Unhandled error in Deferred" reports among ``events``, after a GC."""
    gc.collect()
    return [text for e in events if "Unhandled error" in (text := formatEvent(e))]


def test_leases_bound_during_a_commit_go_together_in_the_next(tmp_path: Path) -> None:
    """Binds made while a commit is in flight wait for it, then share one transaction,
    and each bind's Deferred fires only once its own commit has."""
    pool, store, clock = make_pool(tmp_path)
    commits: list[tuple[list[str], Deferred[None]]] = []
    original = store.put_leases

    def held(rows: list[LeaseRow]) -> Deferred[None]:
        original(rows)  # really written; the caller learns it when the test says so
        later: Deferred[None] = Deferred()
        commits.append(([row.ip for row in rows], later))
        return later

    store.put_leases = held  # type: ignore[method-assign,assignment]
    fired: list[str] = []

    def bind(last: int) -> None:
        ip = f"10.77.0.{last}"
        pool.bind(IPv4Address(ip), f"mac:52:54:00:00:00:{last:02x}",
                  f"52:54:00:00:00:{last:02x}", "").addCallback(lambda _: fired.append(ip))

    bind(100)
    clock.advance(0)
    assert [ips for ips, _ in commits] == [["10.77.0.100"]]
    bind(101)
    bind(102)
    clock.advance(0)
    assert len(commits) == 1 and fired == []  # waits for the commit in flight
    commits[0][1].callback(None)
    assert fired == ["10.77.0.100"]
    clock.advance(0)
    assert [ips for ips, _ in commits][1] == ["10.77.0.101", "10.77.0.102"]
    assert fired == ["10.77.0.100"]
    commits[1][1].callback(None)
    assert fired == ["10.77.0.100", "10.77.0.101", "10.77.0.102"]
    assert {row.ip for row in store.leases_now()} == {"10.77.0.100", "10.77.0.101",
                                                      "10.77.0.102"}
    store.close()


def test_failed_commit_is_logged_with_context_and_no_deferred_unhandled(
        tmp_path: Path, logged: list[LogEvent]) -> None:
    """Issue 13 item 5: a failing commit (a bind that also frees the client's old
    address) is logged once with the addresses it carried, the bind's Deferred fails,
    and no Deferred is left to report "Unhandled error in Deferred" at GC time."""
    pool, store, clock = make_pool(tmp_path)
    key, mac = "mac:52:54:00:00:00:01", "52:54:00:00:00:01"
    pool.bind(IPv4Address("10.77.0.100"), key, mac, "")
    clock.advance(0)
    store.put_leases = lambda rows: fail(OSError("disk full"))  # type: ignore[method-assign,assignment,misc]
    failures: list[object] = []
    pool.bind(IPv4Address("10.77.0.101"), key, mac, "").addErrback(failures.append)
    clock.advance(0)
    assert len(failures) == 1
    texts = [formatEvent(e) for e in logged if e.get("log_failure") is not None]
    assert len(texts) == 1 and "10.77.0.101" in texts[0] and "10.77.0.100" in texts[0]
    assert unhandled(logged) == []
    store.close()


def test_learn_takes_only_this_pools_family(tmp_path: Path) -> None:
    """A lease another server wrote (shared PostgreSQL state) is learnt by the pool of its
    address family only: an IPv6 lease never lands in the IPv4 pool."""
    from pxetwist.dhcp.leases import BOUND

    pool, _, clock = make_pool(tmp_path)
    expires = clock.seconds() + 600
    pool.learn(LeaseRow("fd77::100", "52:54:00:00:00:07", "duid:0001/1", "", expires, BOUND))
    pool.learn(LeaseRow("10.77.0.105", "52:54:00:00:00:08", "", "", expires, BOUND))
    assert pool.holder("fd77::100") is None
    held = pool.holder("10.77.0.105")
    assert held is not None and held.mac == "52:54:00:00:00:08"


def test_servers_sharing_the_pool_start_in_their_own_slices(tmp_path: Path) -> None:
    """With the pool shared by two servers, each offers never-used addresses from its own
    half of the range first, and from the other half once its own is used up."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _, _ = make_pool(tmp_path / "a")
    second, _, _ = make_pool(tmp_path / "b")
    first.share(0, 2)
    second.share(1, 2)
    assert first.allocate("mac:a", "a", None) == IPv4Address("10.77.0.100")
    assert second.allocate("mac:b", "b", None) == IPv4Address("10.77.0.110")
    given = [second.allocate(f"mac:{n}", f"{n}", None) for n in range(11)]
    assert given[-2:] == [IPv4Address("10.77.0.120"), IPv4Address("10.77.0.100")]
