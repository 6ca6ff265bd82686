"""Several servers, one PostgreSQL state: what one server changes, the others take a moment
later (LISTEN/NOTIFY), with no restart and no polling."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from pxetwist.catalog import CatalogService
from pxetwist.config import load_text
from pxetwist.events import EventBus, Stage
from pxetwist.machines import MachineRegistry
from pxetwist.shared import SharedStateService
from pxetwist.store_postgres import PostgresStore

MAC = "52:54:00:00:03:01"


class Server:
    """The state-holding parts of one server: store, machine records, catalog."""

    def __init__(self, url: str, folder: Path, reactor: Any, name: str) -> None:
        for sub in ("tftproot", "catalog"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "catalog" / "debian.ipxe").write_text("#!ipxe\n")  # entry "debian-ipxe"
        config = load_text("[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n", folder)
        self.store = PostgresStore(url, reactor, name)
        self.store.start()
        self.bus = EventBus(reactor, server=name)
        self.machines = MachineRegistry(self.store, self.bus, reactor)
        self.machines.start()
        self.catalog = CatalogService(config.catalog, self.store, reactor)
        self.catalog.load()
        self.shared = SharedStateService(self.store, self.machines, self.catalog, self.bus)
        self.shared.startService()

    def close(self) -> None:
        self.store.close()


def lease_pool(server: Server, folder: Path, reactor: Any, start: str, end: str,
               netmask: str = "255.255.255.0") -> Any:
    """A full-mode lease pool of ``start``-``end`` on ``server``'s store, told of the
    leases the other servers write."""
    from pxetwist.dhcp.leases import LeasePool

    config = load_text(f"[server]\naddress = 10.0.0.2\n[dhcp]\nmode = full\n"
                       f"range_start = {start}\nrange_end = {end}\nnetmask = {netmask}\n"
                       "[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n", folder)
    pool = LeasePool(config.dhcp, server.store, reactor)
    pool.load()
    server.shared.pool = pool
    return pool


async def until(reactor: Any, check: Any, seconds: float = 10.0) -> float:
    """Wait (bounded) until ``check()`` holds; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "not applied in time"
        await deferLater(reactor, 0.02, lambda: None)
    return time.monotonic() - start


@pytest_twisted.ensureDeferred
async def test_assignment_and_settings_made_on_one_server_apply_on_the_other(
    tmp_path: Path, pg_cluster: Any, reactor: Any
) -> None:
    """Assignments, toggles, tokens and events made on one server reach the other through the
    shared database."""
    url = pg_cluster.new_database()
    a = Server(url, tmp_path / "a", reactor, "10.0.0.1")
    b = Server(url, tmp_path / "b", reactor, "10.0.0.2")
    try:
        await deferLater(reactor, 0.3, lambda: None)  # both listening
        assigned: Deferred[Any] = a.machines.assign(MAC, "debian", once=True,
                                                    hostname="node1")
        await assigned
        await until(reactor, lambda: (m := b.machines.get(MAC)) is not None
                    and (m.entry, m.state, m.hostname) == ("debian", "pending", "node1"))
        await a.machines.assign(MAC, None)  # local boot, on A again
        await until(reactor, lambda: b.machines.get(MAC).entry is None)  # type: ignore[union-attr]
        await b.catalog.set_pxe("debian-ipxe", False)  # a toggle on B reaches A
        await until(reactor, lambda: a.catalog.view("debian-ipxe").pxe is False)  # type: ignore[union-attr]
        # and a token made on A for the assignment is the one B checks
        token = a.machines.callback_token(MAC)
        assert token is not None and b.machines.token_matches(MAC, token)
        # a boot A sees shows in B's events, tagged with A; B does not record it again
        a.bus.publish(Stage.DHCP_ACK, mac=MAC, ip="10.0.0.50", detail="seen by A")
        await until(reactor, lambda: any(e.detail == "seen by A" for e in b.bus.recent()))
        [seen] = [e for e in b.bus.recent() if e.detail == "seen by A"]
        assert seen.server == "10.0.0.1" and seen.as_json()["server"] == "10.0.0.1"
        assert a.bus.recent()[-1].as_json()["server"] == "10.0.0.1"
        await a.machines.flush()
        await b.machines.flush()
        history = await b.store.history(MAC)
        assert [e.detail for e in history].count("seen by A") == 1
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_a_lease_bound_on_one_server_is_held_in_the_others_pool(
    tmp_path: Path, pg_cluster: Any, reactor: Any
) -> None:
    """B's pool learns the leases A writes, so B does not offer A's addresses."""
    from pxetwist.store import LeaseRow

    url = pg_cluster.new_database()
    a = Server(url, tmp_path / "a", reactor, "10.0.0.1")
    b = Server(url, tmp_path / "b", reactor, "10.0.0.2")
    try:
        pool = lease_pool(b, tmp_path / "b", reactor, "10.0.0.100", "10.0.0.101")
        await deferLater(reactor, 0.3, lambda: None)  # listening
        row = LeaseRow("10.0.0.100", "52:54:00:00:05:01", "mac:52:54:00:00:05:01", "",
                       time.time() + 600, "bound")
        await a.store.bind_leases([(row, row.client_id)], time.time())
        await until(reactor, lambda: pool.holder("10.0.0.100") == row)
        assert pool.allocate("mac:52:54:00:00:05:02", "52:54:00:00:05:02", None) == \
            IPv4Address("10.0.0.101")
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_a_changed_machine_arrives_in_its_announcement_not_read_back(
    tmp_path: Path, pg_cluster: Any, reactor: Any
) -> None:
    """B takes a record A changed from the announcement itself (no read of the database per
    change); a record too long to announce is still read back."""
    url = pg_cluster.new_database()
    a = Server(url, tmp_path / "a", reactor, "10.0.0.1")
    b = Server(url, tmp_path / "b", reactor, "10.0.0.2")
    reads: list[str] = []
    read = b.store.machine

    def counted(mac: str) -> Any:
        reads.append(mac)
        return read(mac)

    b.store.machine = counted  # type: ignore[method-assign]
    try:
        await deferLater(reactor, 0.3, lambda: None)  # both listening
        await a.machines.assign(MAC, "debian", once=True, hostname="node1")
        await until(reactor, lambda: (m := b.machines.get(MAC)) is not None
                    and (m.entry, m.hostname, m.once) == ("debian", "node1", True))
        assert reads == []
        long = "x" * 9000  # past NOTIFY's 8000 bytes: the key alone, read back
        await a.machines.assign(MAC, "debian", once=True, hostname="node1",
                                vars={"blob": long})
        await until(reactor, lambda: dict(b.machines.get(MAC).vars).get("blob") == long)  # type: ignore[union-attr]
        assert reads == [MAC]
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_the_listener_clears_a_lost_call_connection_once_the_database_answers(
    tmp_path: Path, pg_cluster: Any, reactor: Any
) -> None:
    """A call whose connection broke makes the store unwritable (DHCP stops offering); the
    listener, whose own connection still works, sees the database answer and makes it
    writable again without waiting for another call."""
    a = Server(pg_cluster.new_database(), tmp_path / "a", reactor, "10.0.0.1")
    try:
        await deferLater(reactor, 0.3, lambda: None)  # listening
        assert a.store.writable
        a.store._away = True  # what a broken lease connection leaves (see _timed)
        assert not a.store.writable
        await until(reactor, lambda: a.store.writable, seconds=5)
    finally:
        a.close()


def announcements(url: str, write: Any) -> list[str]:
    """The payloads announced while ``write()`` runs (blocking; a listening connection of
    the test's own)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN pxetwist")
        write()
        return [note.payload for note in conn.notifies(timeout=1.0)]


@pytest_twisted.ensureDeferred
async def test_the_rows_of_one_statement_go_out_together_each_announcement_fitting(
    tmp_path: Path, pg_cluster: Any, reactor: Any
) -> None:
    """A batch of leases and a flush of boot events are announced a few dozen rows at a
    time, each announcement within NOTIFY's 8000 bytes, and the other server takes every
    row, the events in the order they were recorded."""
    from twisted.internet.threads import deferToThread

    from pxetwist.store import EventRow, LeaseRow

    url = pg_cluster.new_database()
    a = Server(url, tmp_path / "a", reactor, "10.0.0.1")
    b = Server(url, tmp_path / "b", reactor, "10.0.0.2")
    try:
        pool = lease_pool(b, tmp_path / "b", reactor, "10.0.1.0", "10.0.3.255",
                          "255.255.0.0")
        await deferLater(reactor, 0.3, lambda: None)  # listening
        now = time.time()
        leases = [LeaseRow(f"10.0.{1 + n // 256}.{n % 256}", f"52:54:00:00:{n // 256:02x}:"
                           f"{n % 256:02x}", f"mac:{n}", "h" * (n % 40), now + 600, "bound")
                  for n in range(300)]
        events = [EventRow(now + n / 1000, MAC, "", Stage.DHCP_ACK, f"{n} " + "d" * (n % 900),
                           "", "") for n in range(200)]

        def write() -> None:
            a.store._bind_now([(row, row.client_id) for row in leases], now)
            a.store._append_now(events, [], [MAC], [])

        payloads = await deferToThread(announcements, url, write)
        assert all(len(p.encode()) < 8000 for p in payloads)
        assert len(payloads) < (len(leases) + len(events)) / 10
        await until(reactor, lambda: all(pool.holder(row.ip) == row for row in leases))
        await until(reactor, lambda: sum(e.mac == MAC for e in b.bus.recent()) == 200)
        seen = [e.detail for e in b.bus.recent() if e.mac == MAC]
        assert seen == [e.detail for e in events]
        assert all(e.server == "10.0.0.1" for e in b.bus.recent() if e.mac == MAC)
    finally:
        a.close()
        b.close()
