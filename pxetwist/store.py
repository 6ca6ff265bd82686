"""The persistent state: one SQLite file (WAL) holding leases, machines,
catalog settings and per-machine boot history.

All SQL runs on one dedicated thread, never on the reactor thread: every
public method returns a Deferred. Every commit uses ``synchronous=FULL``, so
once a method's Deferred fires, the row survives a kill -9 or a power cut; the
DHCP server relies on that before it sends an ACK.

Opening the file (and migrating its schema) happens at once, in the caller's
thread, at startup, so that a corrupt or unwritable file is a clear startup
error instead of a failure on the first boot.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

#: Per-MAC boot events kept on disk; older ones are pruned.
EVENTS_PER_MACHINE = 500

#: Schema migrations, in order; the file's ``user_version`` says how many ran.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE leases (
        ip TEXT PRIMARY KEY,
        mac TEXT NOT NULL,
        client_id TEXT NOT NULL DEFAULT '',
        hostname TEXT NOT NULL DEFAULT '',
        expires REAL NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX leases_mac ON leases(mac);
    CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        ip TEXT NOT NULL DEFAULT '',
        arch TEXT NOT NULL DEFAULT '',
        uuid TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'discovered',
        entry TEXT,
        once INTEGER NOT NULL DEFAULT 1,
        last_stage TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE catalog_settings (
        entry_id TEXT PRIMARY KEY,
        pxe INTEGER,
        label TEXT,
        position INTEGER,
        is_default INTEGER NOT NULL DEFAULT 0,
        kernel_args TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        mac TEXT NOT NULL,
        ip TEXT NOT NULL,
        stage TEXT NOT NULL,
        detail TEXT NOT NULL,
        arch TEXT NOT NULL DEFAULT '',
        uuid TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_mac ON events(mac, id);
    """,
    """
    ALTER TABLE machines ADD COLUMN assignment INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE machines ADD COLUMN hostname TEXT NOT NULL DEFAULT '';
    ALTER TABLE machines ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE machines ADD COLUMN loader TEXT;
    """,
)


class StoreError(Exception):
    """The state file cannot be used; ``str()`` is one line for the operator."""


class LeaseTakenError(Exception):
    """Another server bound the address first (a state shared by several servers)."""


@frozen
class LeaseRow:
    """A DHCP lease as stored.

    :ivar state: ``bound`` (ACKed), ``released`` (kept to give the client the same
        address again), or ``declined`` (quarantined until ``expires``).
    :ivar expires: seconds since the epoch.
    """

    ip: str
    mac: str
    client_id: str
    hostname: str
    expires: float
    state: str


@frozen
class MachineRow:
    """A machine record as stored (see :mod:`pxetwist.machines` for its meaning).

    :ivar assignment: how many times an operator assigned this machine (0: never); a
        callback token is bound to it, so a new assignment voids the old token.
    :ivar hostname: the operator's hostname for it (templates' ``hostname``), or ``""``.
    :ivar vars: the operator's template variables for it, (name, value) pairs by name.
    :ivar loader: the machine's own EFI loader (``ipxe``/``shim``), ``None``: ``[boot]
        efi_loader``.
    """

    mac: str
    first_seen: float
    last_seen: float
    ip: str
    arch: str
    uuid: str
    state: str
    entry: str | None
    once: bool
    last_stage: str
    assignment: int = 0
    hostname: str = ""
    vars: tuple[tuple[str, str], ...] = ()
    loader: str | None = None


@frozen
class SettingRow:
    """Operator settings of one catalog entry; ``None`` means "not set, use the default"."""

    entry_id: str
    pxe: bool | None
    label: str | None
    position: int | None
    is_default: bool
    kernel_args: str | None


@frozen
class EventRow:
    """A boot event as stored in a machine's history."""

    time: float
    mac: str
    ip: str
    stage: str
    detail: str
    arch: str
    uuid: str


def _open(path: Path) -> sqlite3.Connection:
    """Open and migrate the file, turning every SQLite complaint into a StoreError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"state file {path}: cannot create its folder: {e.strerror}") from None
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        _migrate(conn)
        problem = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as e:
        raise StoreError(f"state file {path}: {e}") from None
    if problem != "ok":
        conn.close()
        raise StoreError(f"state file {path}: damaged ({problem})")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this pxetwist ({len(MIGRATIONS)})"
        )
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class Store:
    """The state file. Methods return Deferreds that fire once the change is durable.

    :param path: the SQLite file (created with its folder if missing).
    :param reactor: runs the SQL thread; ``None`` runs each call inline and returns
        an already-fired Deferred, for unit tests and command-line tools.
    :raises StoreError: when the file is corrupt, unwritable or from a newer version.
    """

    def __init__(self, path: Path, reactor: IReactorThreads | None = None) -> None:
        self.path = path
        self._reactor = reactor
        self._conn = _open(path)
        self._pool: ThreadPool | None = None
        if reactor is not None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="pxetwist-store")

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the SQL thread (called by the store's service)."""
        if self._pool is not None and not self._pool.started:
            self._pool.start()

    def close(self) -> None:
        """Finish queued work, stop the SQL thread and close the file."""
        if self._pool is not None and self._pool.started:
            self._pool.stop()
        self._conn.close()

    def status(self) -> dict[str, Any]:
        """What ``/health`` says of the state: the backend and whether it can be written."""
        return {"backend": "sqlite", "ok": True}

    @property
    def writable(self) -> bool:
        """Whether a commit can be expected to succeed now. DHCP offers no address while
        it is false: the ACK would wait for a commit that cannot happen. A local file
        always is; a database server is not while it is away."""
        return True

    def _run(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        if self._pool is None or self._reactor is None:
            try:
                return succeed(work(*args))
            except Exception:
                return fail()
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def _write(self, statements: Iterable[tuple[str, Sequence[object]]]) -> None:
        """Run statements in one durable transaction, in order; a run of one statement
        (a batch of boot events) goes to ``executemany`` at once."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, run in groupby(statements, key=itemgetter(0)):
                conn.executemany(sql, [params for _, params in run])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    # -- leases ----------------------------------------------------------------------

    def put_lease(self, lease: LeaseRow) -> Deferred[None]:
        """Insert or replace the lease of ``lease.ip`` (durable before the Deferred fires)."""
        return self._run(self._write, [_lease_upsert(lease)])

    def put_leases(self, leases: Sequence[LeaseRow]) -> Deferred[None]:
        """Store several leases in one durable transaction (group commit), many rows to
        a statement (see :func:`_lease_upserts`)."""
        return self._run(self._write, _lease_upserts(leases))

    def bind_leases(
        self, rows: Sequence[tuple[LeaseRow, str]], now: float
    ) -> Deferred[dict[str, LeaseRow]]:
        """Store leases in one durable transaction, each only if the address is free in
        the store (released, expired at ``now``) or held by the client key paired with it;
        fires with the rows that kept the others' addresses, by address. One server alone
        (SQLite) is the only writer and its pool the authority: every row is stored."""
        return self.put_leases([row for row, _ in rows]).addCallback(lambda _: {})

    def delete_lease(self, ip: str) -> Deferred[None]:
        """Forget the lease of ``ip``."""
        return self._run(self._write, [("DELETE FROM leases WHERE ip = ?", (ip,))])

    def leases(self) -> Deferred[list[LeaseRow]]:
        """Every stored lease."""
        return self._run(self._leases)

    def leases_now(self) -> list[LeaseRow]:
        """Every stored lease, read at once in this thread; for startup only."""
        return self._leases()

    def _leases(self) -> list[LeaseRow]:
        rows = self._read(
            "SELECT ip, mac, client_id, hostname, expires, state FROM leases ORDER BY ip"
        )
        return [LeaseRow(*row) for row in rows]

    # -- machines --------------------------------------------------------------------

    def put_machine(self, machine: MachineRow) -> Deferred[None]:
        """Insert or replace a machine record."""
        return self._run(self._write, [_machine_upsert(machine)])

    def put_machines(self, machines: Sequence[MachineRow]) -> Deferred[None]:
        """Insert or replace several machine records in one transaction (all or none)."""
        return self._run(self._write, [_machine_upsert(m) for m in machines])

    def machines_now(self) -> list[MachineRow]:
        """Every machine record, read at once in this thread; for startup only."""
        rows = self._read(
            "SELECT mac, first_seen, last_seen, ip, arch, uuid, state, entry, once, last_stage,"
            " assignment, hostname, vars, loader FROM machines ORDER BY mac"
        )
        return [_machine_row(row) for row in rows]

    # -- secrets ---------------------------------------------------------------------

    def secret_now(self, name: str) -> str:
        """The server secret called ``name``: made (random, 256 bits) and stored the first
        time, the same one after every restart; read at once in this thread, for startup."""
        rows = self._read("SELECT value FROM secrets WHERE name = ?", (name,))
        if rows:
            return str(rows[0][0])
        self._write([("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)",
                      (name, secrets.token_hex(32)))])
        return str(self._read("SELECT value FROM secrets WHERE name = ?", (name,))[0][0])

    # -- catalog settings ------------------------------------------------------------

    def put_setting(
        self, setting: SettingRow, clear_other_defaults: bool = False
    ) -> Deferred[None]:
        """Store one entry's settings; with ``clear_other_defaults`` it becomes the only
        default in the same transaction."""
        statements: list[tuple[str, Sequence[object]]] = []
        if clear_other_defaults:
            statements.append(("UPDATE catalog_settings SET is_default = 0", ()))
        statements.append(
            (
                "INSERT OR REPLACE INTO catalog_settings"
                " (entry_id, pxe, label, position, is_default, kernel_args)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    setting.entry_id,
                    None if setting.pxe is None else int(setting.pxe),
                    setting.label,
                    setting.position,
                    int(setting.is_default),
                    setting.kernel_args,
                ),
            )
        )
        return self._run(self._write, statements)

    def settings(self) -> Deferred[dict[str, SettingRow]]:
        """Every entry's settings, by entry id."""
        return self._run(self.settings_now)

    def settings_now(self) -> dict[str, SettingRow]:
        """Every entry's settings, read at once in this thread; for startup only."""
        rows = self._read(
            "SELECT entry_id, pxe, label, position, is_default, kernel_args FROM catalog_settings"
        )
        return {
            row[0]: SettingRow(
                row[0],
                None if row[1] is None else bool(row[1]),
                row[2],
                row[3],
                bool(row[4]),
                row[5],
            )
            for row in rows
        }

    # -- boot history ----------------------------------------------------------------

    def append_events(
        self, events: Sequence[EventRow], machines: Sequence[MachineRow] = (),
        forget: Sequence[str] = (),
    ) -> Deferred[None]:
        """Append boot events (and the machine records they changed) in one transaction,
        pruning each machine's history to :data:`EVENTS_PER_MACHINE`. Events of this batch
        that the pruning would delete at once (a MAC with more than that many in one batch,
        e.g. a client in a boot loop) are not written at all.

        :param forget: MACs whose record and history are deleted in the same transaction
            (evicted records, :class:`pxetwist.machines.MachineRegistry`).

        Many rows to a statement, as :func:`_lease_upserts` and for the same reason: a
        DHCP storm's history is thousands of rows a second, and one statement per row
        (or per MAC) kept the SQL thread waiting for the GIL, the lease commits behind it."""
        rows = [(e.time, e.mac, e.ip, e.stage, e.detail, e.arch, e.uuid)
                for e in _newest_per_mac(events, EVENTS_PER_MACHINE)]
        statements = _multi_row(
            "INSERT INTO events (time, mac, ip, stage, detail, arch, uuid) VALUES ", rows)
        last = {m.mac: m for m in machines}  # one row per MAC: a valid upsert
        statements += _multi_row(_MACHINE_INSERT, [_machine_upsert(m)[1] for m in last.values()])
        macs = sorted({e.mac for e in events})
        # each machine's newest EVENTS_PER_MACHINE events stay, for all MACs at once
        statements += _in_list(
            "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER"
            " (PARTITION BY mac ORDER BY id DESC) AS newer FROM events WHERE mac IN ({})) AS ranked"
            " WHERE newer > ?)", macs, (EVENTS_PER_MACHINE,))
        statements += _in_list("DELETE FROM machines WHERE mac IN ({})", list(forget))
        statements += _in_list("DELETE FROM events WHERE mac IN ({})", list(forget))
        return self._run(self._write, statements)

    def history(self, mac: str, limit: int = EVENTS_PER_MACHINE) -> Deferred[list[EventRow]]:
        """A machine's stored boot events, oldest first."""

        def read() -> list[EventRow]:
            rows = self._read(
                "SELECT time, mac, ip, stage, detail, arch, uuid FROM events WHERE mac = ?"
                " ORDER BY id DESC LIMIT ?",
                (mac, limit),
            )
            return [EventRow(*row) for row in reversed(rows)]

        return self._run(read)


def _newest_per_mac(events: Sequence[EventRow], limit: int) -> list[EventRow]:
    """``events`` in order, without those older than the newest ``limit`` of their MAC."""
    counts: dict[str, int] = {}
    kept: list[EventRow] = []
    for event in reversed(events):
        seen = counts.get(event.mac, 0)
        if seen < limit:
            counts[event.mac] = seen + 1
            kept.append(event)
    kept.reverse()
    return kept


def _lease_upsert(lease: LeaseRow) -> tuple[str, Sequence[object]]:
    return (
        "INSERT OR REPLACE INTO leases (ip, mac, client_id, hostname, expires, state)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (lease.ip, lease.mac, lease.client_id, lease.hostname, lease.expires, lease.state),
    )


#: Rows per multi-row statement: at most 999 ``?`` in one (SQLite's smallest limit).
MAX_VARIABLES = 999


def _lease_upserts(leases: Sequence[LeaseRow]) -> list[tuple[str, Sequence[object]]]:
    """Statements storing ``leases``, up to 166 rows each, the last row of an address
    winning as if they were stored one by one.

    Why not one statement per lease: each statement is a step of the SQL thread, and
    around every step ``sqlite3`` gives the GIL back and must win it again from the
    reactor thread, which, busy with a DHCP storm, gives it up only every switch
    interval (5 ms). A batch of 500 one-row statements then took seconds; it is now a
    handful of steps.
    """
    last = {lease.ip: lease for lease in leases}  # one row per address: a valid upsert
    return _multi_row(_LEASE_INSERT, [_lease_upsert(lease)[1] for lease in last.values()])


_LEASE_INSERT = ("INSERT OR REPLACE INTO leases (ip, mac, client_id, hostname, expires, state)"
                 " VALUES ")
_MACHINE_INSERT = (
    "INSERT OR REPLACE INTO machines (mac, first_seen, last_seen, ip, arch, uuid, state,"
    " entry, once, last_stage, assignment, hostname, vars, loader) VALUES ")


def _multi_row(insert: str, rows: Sequence[Sequence[object]]
               ) -> list[tuple[str, Sequence[object]]]:
    """``insert`` (ending in ``VALUES``) with as many rows to a statement as
    :data:`MAX_VARIABLES` allows, in order."""
    if not rows:
        return []
    width = len(rows[0])
    values = "(" + ", ".join(["?"] * width) + ")"
    per = MAX_VARIABLES // width
    return [(insert + ", ".join([values] * len(chunk)), [v for row in chunk for v in row])
            for chunk in (rows[i:i + per] for i in range(0, len(rows), per))]


def _in_list(sql: str, values: Sequence[object], tail: Sequence[object] = ()
             ) -> list[tuple[str, Sequence[object]]]:
    """``sql`` with its ``{}`` made an ``IN`` list, one statement per
    :data:`MAX_VARIABLES` values (less ``tail``'s, bound after them)."""
    per = MAX_VARIABLES - len(tail)
    return [(sql.format(", ".join(["?"] * len(chunk))), [*chunk, *tail])
            for chunk in (values[i:i + per] for i in range(0, len(values), per))]


def _machine_upsert(m: MachineRow) -> tuple[str, Sequence[object]]:
    return (
        "INSERT OR REPLACE INTO machines"
        " (mac, first_seen, last_seen, ip, arch, uuid, state, entry, once, last_stage,"
        " assignment, hostname, vars, loader)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (m.mac, m.first_seen, m.last_seen, m.ip, m.arch, m.uuid, m.state, m.entry,
         int(m.once), m.last_stage, m.assignment, m.hostname,
         json.dumps(dict(m.vars), sort_keys=True), m.loader),
    )


def _machine_row(row: tuple[Any, ...]) -> MachineRow:
    values = list(row)
    values[8] = bool(values[8])
    values[12] = tuple(sorted(json.loads(values[12]).items()))
    return MachineRow(*values)
