"""The PostgreSQL backend of the state, for several servers sharing one state.

:class:`PostgresStore` is a :class:`pxetwist.store.Store` whose connection is a
PostgreSQL one (psycopg 3): every public method, every Deferred and every
guarantee are the same. SQL runs on the store's own threads, never on the
reactor thread: lease commits on one, with their own connection, so an ACK
never waits behind boot history; everything else on the other. Every commit
runs with ``synchronous_commit = on``, so a Deferred fires only once the change
is on the database server's disk.

The store's SQL is written once, in the SQLite dialect :mod:`pxetwist.store`
speaks (save the hot batches of leases and boot history, written here as a few
set-based statements over arrays, not a statement a row); :func:`to_postgres`
turns it into PostgreSQL: ``?`` parameters,
``INSERT OR REPLACE`` / ``INSERT OR IGNORE`` into ``ON CONFLICT`` on the
table's primary key (read from the database's catalog, so a table a later
migration adds needs nothing here), and the migrations' column types. The
schema version lives in the table ``pxetwist_schema``; a migration runs under
an advisory lock, so servers starting together migrate once.

A lost connection fails the call it happened in (no ACK for a lease that was
not committed) and the next call connects again.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from pxetwist.metrics import DATABASE_ERRORS, DATABASE_SECONDS
from pxetwist.store import (
    EVENTS_PER_MACHINE,
    MIGRATIONS,
    EventRow,
    LeaseRow,
    MachineRow,
    Store,
    StoreError,
    _machine_row,
    _machine_upsert,
    _newest_per_mac,
)

T = TypeVar("T")

#: Key of the advisory lock taken while the schema is migrated.
MIGRATION_LOCK = 0x70786574  # "pxet"

#: Migrations of PostgreSQL's own, applied after :data:`pxetwist.store.MIGRATIONS`
#: (``pxetwist_schema.postgres_version`` says how many ran): what several servers writing
#: at once need and one server alone does not.
POSTGRES_MIGRATIONS: tuple[str, ...] = (
    # one bound address per client, whichever server bound it
    "CREATE UNIQUE INDEX leases_bound_client ON leases (client_id) WHERE state = 'bound'",
    # the DHCP servers' heartbeats ([dhcp] peers), in the database's clock
    "CREATE TABLE peers (server TEXT PRIMARY KEY, beat DOUBLE PRECISION NOT NULL)",
    # every change of a machine or a catalog setting is announced to the other servers
    """
    CREATE FUNCTION pxetwist_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE changed jsonb;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed := to_jsonb(OLD); ELSE changed := to_jsonb(NEW);
        END IF;
        PERFORM pg_notify('pxetwist', json_build_object(
            'table', TG_TABLE_NAME, 'key', changed ->> TG_ARGV[0],
            'origin', current_setting('application_name'))::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER machines_notify AFTER INSERT OR UPDATE OR DELETE ON machines
        FOR EACH ROW EXECUTE FUNCTION pxetwist_notify('mac');
    CREATE TRIGGER catalog_settings_notify AFTER INSERT OR UPDATE OR DELETE
        ON catalog_settings FOR EACH ROW EXECUTE FUNCTION pxetwist_notify('entry_id');
    """,
    # every boot event a server records is announced to the others (/events everywhere)
    """
    CREATE FUNCTION pxetwist_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('pxetwist', json_build_object(
            'table', 'events', 'origin', current_setting('application_name'),
            'event', json_build_object('time', NEW.time, 'mac', NEW.mac, 'ip', NEW.ip,
                'stage', NEW.stage, 'detail', left(NEW.detail, 1000),
                'arch', NEW.arch, 'uuid', NEW.uuid))::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_notify AFTER INSERT ON events
        FOR EACH ROW EXECUTE FUNCTION pxetwist_notify_event();
    """,
    # every lease a server writes is announced to the others (their pools stay current)
    """
    CREATE FUNCTION pxetwist_notify_lease() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('pxetwist', json_build_object(
            'table', 'leases', 'origin', current_setting('application_name'),
            'event', to_jsonb(NEW))::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER leases_notify AFTER INSERT OR UPDATE ON leases
        FOR EACH ROW EXECUTE FUNCTION pxetwist_notify_lease();
    """,
    # a changed machine record travels in its announcement, so the others need not read
    # it back (a read per record, on the store's one thread, delayed the lease commits of
    # two servers sharing a DHCP storm); the key alone when too long for NOTIFY
    """
    CREATE OR REPLACE FUNCTION pxetwist_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE changed jsonb; message text;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed := to_jsonb(OLD); ELSE changed := to_jsonb(NEW);
        END IF;
        message := json_build_object(
            'table', TG_TABLE_NAME, 'key', changed ->> TG_ARGV[0],
            'origin', current_setting('application_name'),
            'row', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE changed END)::text;
        IF octet_length(message) > 7900 THEN
            message := json_build_object(
                'table', TG_TABLE_NAME, 'key', changed ->> TG_ARGV[0],
                'origin', current_setting('application_name'))::text;
        END IF;
        PERFORM pg_notify('pxetwist', message);
        RETURN NULL;
    END $$;
    """,
    # The rows a statement wrote go out together, as many to an announcement as fit in
    # NOTIFY's 8000 bytes, not one trigger call and one announcement a row: two servers
    # sharing a DHCP storm sent each other ~5 a DORA (a lease, two events, the machine's
    # record), each made in PL/pgSQL, queued, read by both listeners and decoded alone.
    # A row too long for one goes as its key (the listener reads it back); a deleted
    # machine goes as its key.
    """
    CREATE FUNCTION pxetwist_notify_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        head text := json_build_object('table', TG_TABLE_NAME,
                                       'origin', current_setting('application_name'))::text;
        changed jsonb;
        item text;
        batch text := '';
    BEGIN
        head := left(head, -1) || ', "rows" : [';
        FOR changed IN SELECT to_jsonb(r) FROM changed_rows r LOOP
            IF TG_ARGV[1] = 'keys' THEN
                item := to_json(changed ->> TG_ARGV[0])::text;
            ELSE
                IF TG_TABLE_NAME = 'events' THEN
                    changed := jsonb_set(changed, '{detail}',
                                         to_jsonb(left(changed ->> 'detail', 1000)));
                END IF;
                item := changed::text;
                IF octet_length(item) > 7000 THEN
                    item := to_json(changed ->> TG_ARGV[0])::text;
                END IF;
            END IF;
            IF batch <> ''
                    AND octet_length(head) + octet_length(batch) + octet_length(item) > 7900
            THEN
                PERFORM pg_notify('pxetwist', head || batch || ']}');
                batch := '';
            END IF;
            batch := CASE WHEN batch = '' THEN item ELSE batch || ', ' || item END;
        END LOOP;
        IF batch <> '' THEN
            PERFORM pg_notify('pxetwist', head || batch || ']}');
        END IF;
        RETURN NULL;
    END $$;
    DROP TRIGGER machines_notify ON machines;
    DROP TRIGGER events_notify ON events;
    DROP TRIGGER leases_notify ON leases;
    CREATE TRIGGER machines_inserted AFTER INSERT ON machines
        REFERENCING NEW TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('mac', 'rows');
    CREATE TRIGGER machines_updated AFTER UPDATE ON machines
        REFERENCING NEW TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('mac', 'rows');
    CREATE TRIGGER machines_deleted AFTER DELETE ON machines
        REFERENCING OLD TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('mac', 'keys');
    CREATE TRIGGER events_inserted AFTER INSERT ON events
        REFERENCING NEW TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('id', 'rows');
    CREATE TRIGGER leases_inserted AFTER INSERT ON leases
        REFERENCING NEW TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('ip', 'rows');
    CREATE TRIGGER leases_updated AFTER UPDATE ON leases
        REFERENCING NEW TABLE AS changed_rows
        FOR EACH STATEMENT EXECUTE FUNCTION pxetwist_notify_rows('ip', 'rows');
    """,
)

#: The channel of :data:`POSTGRES_MIGRATIONS`' change announcements.
CHANNEL = "pxetwist"

#: Seconds to wait for the database server when connecting.
CONNECT_TIMEOUT = 5

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(text: str) -> bool:
    """Whether ``[server] state`` names a PostgreSQL database rather than a file."""
    return text.startswith(_URL_SCHEMES)


def redact(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = re.sub(r"(?i)(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_INSERT = re.compile(
    r"^\s*INSERT\s+OR\s+(REPLACE|IGNORE)\s+INTO\s+(\w+)\s*\(([^)]*)\)(.*)$",
    re.IGNORECASE | re.DOTALL,
)


def to_postgres(sql: str, primary_keys: dict[str, tuple[str, ...]]) -> str:
    """One statement of the store's SQLite dialect in PostgreSQL's.

    :param primary_keys: table -> its primary key columns, for ``INSERT OR REPLACE``.
    """
    match = _INSERT.match(sql)
    if match:
        verb, table, columns, rest = match.groups()
        names = [c.strip() for c in columns.split(",")]
        sql = f"INSERT INTO {table} ({', '.join(names)}){rest}"
        if verb.upper() == "IGNORE":
            sql += " ON CONFLICT DO NOTHING"
        else:
            keys = primary_keys[table]
            updates = [f"{c} = EXCLUDED.{c}" for c in names if c not in keys]
            sql += f" ON CONFLICT ({', '.join(keys)}) " + (
                f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING")
    return sql.replace("%", "%%").replace("?", "%s")


def migration_to_postgres(script: str) -> list[str]:
    """A schema migration of :data:`pxetwist.store.MIGRATIONS` as PostgreSQL statements."""
    script = re.sub(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY",
                    script, flags=re.IGNORECASE)
    script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script, flags=re.IGNORECASE)
    return [s.strip() for s in script.split(";") if s.strip()]


_MACHINE_COLUMNS = ("SELECT mac, first_seen, last_seen, ip, arch, uuid, state, entry, once,"
                    " last_stage, assignment, hostname, vars, loader FROM machines")
_LEASE_COLUMNS = "SELECT ip, mac, client_id, hostname, expires, state FROM leases"

#: A batch's clients (``client_id`` with the address it binds) free their other bound
#: addresses (one address per client).
_RELEASE_OTHERS = (
    "UPDATE leases AS l SET state = 'released', expires = LEAST(l.expires, %s)"
    " FROM unnest(%s::text[], %s::text[]) AS b(client_id, ip)"
    " WHERE l.client_id = b.client_id AND l.ip <> b.ip AND l.state = 'bound'"
)

#: A batch of leases, each written unless another client holds its address (whoever
#: bound it, unexpired): ``owner``, the client that may overwrite it, comes with each row.
#: Returns the addresses written.
_CONDITIONAL_UPSERT = (
    "INSERT INTO leases AS l (ip, mac, client_id, hostname, expires, state)"
    " SELECT ip, mac, client_id, hostname, expires, state FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[])"
    " AS b(ip, mac, client_id, hostname, expires, state)"
    " ON CONFLICT (ip) DO UPDATE SET mac = EXCLUDED.mac, client_id = EXCLUDED.client_id,"
    " hostname = EXCLUDED.hostname, expires = EXCLUDED.expires, state = EXCLUDED.state"
    " WHERE l.state = 'released' OR l.expires <= %s OR l.client_id ="
    " (SELECT o.owner FROM unnest(%s::text[], %s::text[]) AS o(ip, owner)"
    " WHERE o.ip = EXCLUDED.ip)"
    " RETURNING ip"
)


def _columns(rows: Iterable[Sequence[object]]) -> list[list[object]]:
    """Rows of parameters as one list per column (the arrays ``unnest`` takes)."""
    return [list(column) for column in zip(*rows, strict=True)]


def lease_runs(rows: Sequence[tuple[LeaseRow, str]]) -> list[list[tuple[LeaseRow, str]]]:
    """``rows`` cut, in order, into runs that one set-based statement each may write as
    if row by row: a run has each address once (a statement may not change a row twice)
    and each client bound once (its other addresses are freed before the run's rows are
    written)."""
    runs: list[list[tuple[LeaseRow, str]]] = []
    addresses: set[str] = set()
    clients: set[str] = set()
    for row, owner in rows:
        bound = row.state == "bound"
        if not runs or row.ip in addresses or (bound and row.client_id in clients):
            runs.append([])
            addresses, clients = set(), set()
        runs[-1].append((row, owner))
        addresses.add(row.ip)
        if bound:
            clients.add(row.client_id)
    return runs


#: A batch of boot events, in order.
_INSERT_EVENTS = (
    "INSERT INTO events (time, mac, ip, stage, detail, arch, uuid)"
    " SELECT time, mac, ip, stage, detail, arch, uuid FROM unnest("
    "%s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " WITH ORDINALITY AS e(time, mac, ip, stage, detail, arch, uuid, n) ORDER BY n"
)

_MACHINE_TYPES = ("text", "float8", "float8", "text", "text", "text", "text", "text",
                  "integer", "text", "integer", "text", "text", "text")

#: A batch of machine records (each MAC once), written whole (``INSERT OR REPLACE``).
_UPSERT_MACHINES = (
    "INSERT INTO machines (mac, first_seen, last_seen, ip, arch, uuid, state, entry, once,"
    " last_stage, assignment, hostname, vars, loader) SELECT * FROM unnest("
    + ", ".join(f"%s::{kind}[]" for kind in _MACHINE_TYPES) + ")"
    " ON CONFLICT (mac) DO UPDATE SET first_seen = EXCLUDED.first_seen,"
    " last_seen = EXCLUDED.last_seen, ip = EXCLUDED.ip, arch = EXCLUDED.arch,"
    " uuid = EXCLUDED.uuid, state = EXCLUDED.state, entry = EXCLUDED.entry,"
    " once = EXCLUDED.once, last_stage = EXCLUDED.last_stage,"
    " assignment = EXCLUDED.assignment, hostname = EXCLUDED.hostname, vars = EXCLUDED.vars,"
    " loader = EXCLUDED.loader"
)

#: Each of these machines keeps its newest ``%s`` events.
_PRUNE_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER"
    " (PARTITION BY mac ORDER BY id DESC) AS n FROM events WHERE mac = ANY(%s)) AS r"
    " WHERE n > %s)"
)

_BEAT = ("INSERT INTO peers (server, beat) VALUES (?, extract(epoch FROM clock_timestamp()))"
         " ON CONFLICT (server) DO UPDATE SET beat = EXCLUDED.beat")


def _connect(url: str, name: str = "pxetwist") -> Any:
    import psycopg

    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                           application_name=name)
    conn.execute("SET synchronous_commit = on")
    return conn


def _migrate(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS pxetwist_schema (version INTEGER NOT NULL,"
                     " postgres_version INTEGER NOT NULL DEFAULT 0)")
        row = conn.execute("SELECT version, postgres_version FROM pxetwist_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO pxetwist_schema (version) VALUES (0)")
            row = (0, 0)
        version, own_version = row
        if version > len(MIGRATIONS) or own_version > len(POSTGRES_MIGRATIONS):
            raise StoreError(f"schema version {version}.{own_version} is newer than this"
                             f" pxetwist ({len(MIGRATIONS)}.{len(POSTGRES_MIGRATIONS)})")
        for number in range(version, len(MIGRATIONS)):
            for statement in migration_to_postgres(MIGRATIONS[number]):
                conn.execute(statement)
        for number in range(own_version, len(POSTGRES_MIGRATIONS)):
            conn.execute(POSTGRES_MIGRATIONS[number])
        conn.execute("UPDATE pxetwist_schema SET version = %s, postgres_version = %s",
                     (len(MIGRATIONS), len(POSTGRES_MIGRATIONS)))


def _each_changed(changed: Callable[[str | None, Any, str], object], table: str | None,
                  rows: list[Any], server: str) -> None:
    """``changed`` for each row of one announcement, in the reactor thread."""
    for row in rows:
        changed(table, row, server)


def machine_from_announcement(row: dict[str, Any]) -> MachineRow:
    """A machine record from the ``row`` of its change announcement (``to_jsonb``)."""
    return _machine_row(tuple(row[column] for column in _MACHINE_FIELDS))


_MACHINE_FIELDS = tuple(name.strip() for name in
                        _MACHINE_COLUMNS.removeprefix("SELECT ").split(" FROM ")[0].split(","))


def _primary_keys(conn: Any) -> dict[str, tuple[str, ...]]:
    rows = conn.execute(
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu"
        " ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema"
        " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()"
        " ORDER BY tc.table_name, kcu.ordinal_position"
    ).fetchall()
    keys: dict[str, tuple[str, ...]] = {}
    for table, column in rows:
        keys[table] = (*keys.get(table, ()), column)
    return keys


class PostgresStore(Store):
    """The state in a PostgreSQL database. Methods return Deferreds that fire once the
    change is committed durably.

    :param url: a ``postgresql://`` URL (libpq: ``host=`` a socket folder or a host name,
        the password from the URL, ``PGPASSFILE`` or ``PGPASSWORD``).
    :param reactor: as for :class:`pxetwist.store.Store`.
    :raises StoreError: when the database cannot be reached, or its schema is newer; the
        message never holds the password.
    """

    _log = Logger()

    def __init__(self, url: str, reactor: IReactorThreads | None = None,
                 server: str = "") -> None:
        self.url = url
        #: This server's name in the announcements of its changes (``[server] address``).
        self.server = server
        self.path = Path()
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        self._pg: Any = None
        #: Lease commits have their own thread and connection: an ACK waits for its lease
        #: commit only, not behind the boot history and machine records of the other.
        self._lease_pool: ThreadPool | None = None
        self._lease_pg: Any = None
        #: This store's name in the database: its own change announcements are skipped.
        self.origin = f"pxetwist {secrets.token_hex(6)} {server}"
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        #: The last call's failure while the database is away, else "" (``/health``).
        self._problem = ""
        #: Whether the database is away (a connection lost): :attr:`writable`.
        self._away = False
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"state {redact(url)}: the PostgreSQL driver psycopg is not"
                             " installed (pip install 'psycopg[binary]')") from None
        try:
            self._pg = _connect(url, self.origin)
            _migrate(self._pg)
            self._keys = _primary_keys(self._pg)
        except psycopg.Error as e:
            if self._pg is not None:
                self._pg.close()
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreError(f"state {redact(url)}: {message.replace(url, redact(url))}") \
                from None
        except StoreError as e:
            self._pg.close()
            raise StoreError(f"state {redact(url)}: {e}") from None
        if reactor is not None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="pxetwist-store")
            self._lease_pool = ThreadPool(minthreads=1, maxthreads=1,
                                          name="pxetwist-store-leases")

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self.url)}>"

    def start(self) -> None:
        super().start()
        if self._lease_pool is not None and not self._lease_pool.started:
            self._lease_pool.start()

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(10)
        for pool in (self._pool, self._lease_pool):
            if pool is not None and pool.started:
                pool.stop()
        for conn in (self._pg, self._lease_pg):
            if conn is not None:
                conn.close()
        self._pg = self._lease_pg = None

    def status(self) -> dict[str, Any]:
        """The backend, the URL without its password, and whether the database answers
        (``error``: why not, while it does not)."""
        result: dict[str, Any] = {"backend": "postgresql", "url": redact(self.url),
                                  "ok": not self._problem}
        if self._problem:
            result["error"] = self._problem
        return result

    @property
    def writable(self) -> bool:
        """False from a lost connection (a call's, or the listener's) until a call
        succeeds again or the listener reconnects (it retries every second). A statement
        that fails on a working connection does not count: nothing would clear it while
        DHCP, refusing to offer, writes nothing."""
        return not self._away

    def _timed(self, kind: str, work: Callable[..., T], *args: Any) -> T:
        """Run ``work`` against the database: timed, counted, and the connection dropped
        when it broke (the next call connects again)."""
        start = time.monotonic()
        try:
            result = work(*args)
        except Exception as e:
            DATABASE_ERRORS.labels(kind=kind).inc()
            self._problem = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self._away = self._lost(e)
            raise
        DATABASE_SECONDS.labels(kind=kind).observe(time.monotonic() - start)
        self._problem = ""
        self._away = False
        return result

    def _connection(self) -> Any:
        if self._pg is None or self._pg.closed:
            self._pg = _connect(self.url, self.origin)
        return self._pg

    def _lease_connection(self) -> Any:
        if self._lease_pg is None or self._lease_pg.closed:
            self._lease_pg = _connect(self.url, self.origin)
        return self._lease_pg

    def _lost(self, error: Exception) -> bool:
        """After an error: when a connection broke or could not be made, drop both (they go
        to the same server: the idle one is most likely dead too), so the next calls
        connect again; whether it was so."""
        import psycopg

        connections = [c for c in (self._pg, self._lease_pg) if c is not None]
        if isinstance(error, psycopg.OperationalError) or any(
                c.closed or c.broken for c in connections):
            for conn in connections:
                conn.close()
            self._pg = self._lease_pg = None
            return True
        return False

    def _write(self, statements: Iterable[tuple[str, Sequence[object]]]) -> None:
        self._timed("write", self._write_now, statements)

    def _write_now(self, statements: Iterable[tuple[str, Sequence[object]]]) -> None:
        conn = self._connection()
        # one round trip, BEGIN and COMMIT included (pipeline mode)
        with conn.pipeline(), conn.transaction(), conn.cursor() as cursor:
            for sql, run in groupby(statements, key=itemgetter(0)):
                cursor.executemany(to_postgres(sql, self._keys),
                                   [params for _, params in run])

    def bind_leases(
        self, rows: Sequence[tuple[LeaseRow, str]], now: float
    ) -> Deferred[dict[str, LeaseRow]]:
        """Bind in one transaction; a row whose address another client holds in the database
        (bound by another server, unexpired) is not written, and the holder's row is
        returned for it. A bound row first releases its client's other bound addresses.
        Runs on the leases' own thread and connection, in the order called."""
        if self._lease_pool is None or self._reactor is None:
            return self._run(self._bind, rows, now)
        return deferToThreadPool(self._reactor, self._lease_pool, self._bind, rows, now)

    def _bind(self, rows: Sequence[tuple[LeaseRow, str]], now: float) -> dict[str, LeaseRow]:
        return self._timed("bind", self._bind_now, rows, now)

    def _bind_now(self, rows: Sequence[tuple[LeaseRow, str]], now: float
                  ) -> dict[str, LeaseRow]:
        conn = self._lease_connection()
        # The whole batch, BEGIN and COMMIT included, in one round trip (pipeline mode),
        # and two statements a run, not two a lease: with the CPU shared, each round trip
        # waits for the database's process to be scheduled, and adapting two statements'
        # parameters per lease in Python took ~1 ms a lease (batches of 500 took 0.5 s).
        written: list[tuple[list[tuple[LeaseRow, str]], Any]] = []
        with conn.pipeline(), conn.transaction():
            for run in lease_runs(rows):
                bound = [row for row, _ in run if row.state == "bound"]
                if bound:
                    conn.execute(_RELEASE_OTHERS, (now, [r.client_id for r in bound],
                                                   [r.ip for r in bound]))
                ips = [row.ip for row, _ in run]
                written.append((run, conn.execute(_CONDITIONAL_UPSERT, (
                    ips, [row.mac for row, _ in run], [row.client_id for row, _ in run],
                    [row.hostname for row, _ in run], [row.expires for row, _ in run],
                    [row.state for row, _ in run], now, ips, [owner for _, owner in run]))))
        lost: dict[str, LeaseRow] = {}
        for run, cursor in written:
            won = {ip for (ip,) in cursor.fetchall()}
            for row, _ in run:
                if row.ip not in won:  # another client holds it: who, now
                    held = conn.execute(f"{_LEASE_COLUMNS} WHERE ip = %s",
                                        (row.ip,)).fetchone()
                    lost[row.ip] = LeaseRow(*held) if held is not None else LeaseRow(
                        row.ip, "", "", "", now, "released")  # and gave it back meanwhile
        return lost

    # -- changes made by the other servers -----------------------------------------------

    def listen(self, changed: Callable[[str | None, Any, str], object]) -> None:
        """Call ``changed(table, key, server)`` in the reactor thread whenever another
        server changes a machine (``"machines"``, its row as a dict, or its MAC when the
        row was too long to announce or the record was deleted), a catalog setting
        (``"catalog_settings"``, its entry id), records a boot event (``"events"``, the
        event's fields) or writes a lease (``"leases"``, its fields), a moment after it
        commits; and ``changed(None, None, "")`` after
        the listening connection was lost and came back (announcements may have been
        missed: read everything again)."""
        assert self._reactor is not None, "listening needs a reactor"
        reactor: Any = self._reactor
        self._listener = threading.Thread(target=self._listen, args=(reactor, changed),
                                          name="pxetwist-store-listen", daemon=True)
        self._listener.start()

    def _listen(self, reactor: Any, changed: Callable[[str | None, Any, str], object]
                ) -> None:
        import psycopg

        lost = False
        # json_build_object's spelling of the origin key and value; quotes inside a value
        # are escaped, so only the origin itself reads like this
        own = f'"origin" : {json.dumps(self.origin)}'
        while not self._stopping.is_set():
            try:
                with _connect(self.url, self.origin + " listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._problem = ""
                    self._away = False
                    if lost:
                        reactor.callFromThread(changed, None, None, "")
                        lost = False
                    while not self._stopping.is_set():
                        if self._away:  # a call's connection broke, this one may not have:
                            conn.execute("SELECT 1")  # the database answers, offer again
                            self._away = False
                        for note in conn.notifies(timeout=0.5):
                            if own in note.payload:
                                continue  # this store's change: no need to decode it
                            message = json.loads(note.payload)
                            origin = str(message.get("origin", ""))
                            if origin == self.origin:
                                continue
                            rows = message.get("rows")
                            if not isinstance(rows, list):  # one row (catalog settings)
                                rows = [message.get("row") or message.get("key")]
                            # one trip to the reactor thread for the rows of an announcement
                            reactor.callFromThread(
                                _each_changed, changed, message.get("table"), rows,
                                origin.split(" ", 2)[2] if origin.count(" ") >= 2 else "")
            except (psycopg.Error, ValueError) as e:
                self._problem = (str(e).strip().splitlines() or [type(e).__name__])[0]
                self._away = isinstance(e, psycopg.OperationalError)
                if not lost:
                    reactor.callFromThread(self._log.warn, "state {url}: change announcements"
                                           " lost ({error}); reconnecting",
                                           url=redact(self.url), error=str(e).strip())
                lost = True
                self._stopping.wait(1.0)

    def machine(self, mac: str) -> Deferred[MachineRow | None]:
        """The stored record of ``mac``, or ``None``."""

        def read() -> MachineRow | None:
            rows = self._read(f"{_MACHINE_COLUMNS} WHERE mac = ?", (mac,))
            return _machine_row(rows[0]) if rows else None

        return self._run(read)

    def machines(self) -> Deferred[list[MachineRow]]:
        """Every stored machine record."""
        return self._run(self.machines_now)

    def append_events(
        self, events: Sequence[EventRow], machines: Sequence[MachineRow] = (),
        forget: Sequence[str] = (),
    ) -> Deferred[None]:
        """As :meth:`pxetwist.store.Store.append_events`, in five set-based statements at
        most, not three a machine: a DHCP storm flushes hundreds of machines at once, and
        adapting a statement's parameters per row in Python took ~1 ms a row, on a thread
        that shares the GIL with the reactor."""
        kept = _newest_per_mac(events, EVENTS_PER_MACHINE)
        records = list({m.mac: m for m in machines}.values())  # the last of each MAC
        return self._run(self._timed, "write", self._append_now, kept, records,
                         sorted({e.mac for e in events}), list(forget))

    def _append_now(self, events: list[EventRow], machines: list[MachineRow],
                    macs: list[str], forget: list[str]) -> None:
        conn = self._connection()
        with conn.pipeline(), conn.transaction():
            if events:
                conn.execute(_INSERT_EVENTS, _columns(
                    (e.time, e.mac, e.ip, e.stage, e.detail, e.arch, e.uuid) for e in events))
            if machines:
                conn.execute(_UPSERT_MACHINES, _columns(_machine_upsert(m)[1]
                                                        for m in machines))
            if macs:
                conn.execute(_PRUNE_EVENTS, (macs, EVENTS_PER_MACHINE))
            if forget:
                conn.execute("DELETE FROM machines WHERE mac = ANY(%s)", (forget,))
                conn.execute("DELETE FROM events WHERE mac = ANY(%s)", (forget,))

    def heartbeat(self, server: str, timeout: float) -> Deferred[list[str]]:
        """Record that ``server`` is alive now (the database's clock, so the servers' own
        clocks need not agree); fires with the servers that beat within ``timeout``."""

        def beat() -> list[str]:
            self._write([(_BEAT, (server,))])
            rows = self._read("SELECT server FROM peers WHERE beat >="
                              " extract(epoch FROM clock_timestamp()) - ? ORDER BY server",
                              (timeout,))
            return [row[0] for row in rows]

        return self._run(beat)

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._timed("read", self._read_now, sql, params)

    def _read_now(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = \
            self._connection().execute(to_postgres(sql, self._keys), params).fetchall()
        return rows


def open_store(location: str | Path, reactor: IReactorThreads | None = None,
               server: str = "") -> Store:
    """The store ``[server] state`` names: a PostgreSQL URL or an SQLite file;
    ``server``: this server's name in a shared state.

    :raises StoreError: when it cannot be used.
    """
    if isinstance(location, str) and is_postgres_url(location):
        return PostgresStore(location, reactor, server)
    return Store(Path(location), reactor)
