"""The lease pool's group commit: one commit on its way to disk at a time."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pxetwist.config import load_text
from pxetwist.dhcp.leases import LeasePool
from pxetwist.store import LeaseRow, Store


def test_leases_bound_during_a_commit_go_together_in_the_next(tmp_path: Path) -> None:
    """Binds made while a commit is in flight wait for it, then share one transaction,
    and each bind's Deferred fires only once its own commit has."""
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
