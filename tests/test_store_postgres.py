"""The PostgreSQL backend on its own: the SQL dialect, the URL kept secret, the schema
version, migrations by servers starting together, a lost connection."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxetwist.store import MIGRATIONS, LeaseRow, StoreError
from pxetwist.store_postgres import (
    PostgresStore,
    lease_runs,
    migration_to_postgres,
    open_store,
    redact,
    to_postgres,
)

KEYS = {"leases": ("ip",), "pairs": ("a", "b")}


def test_insert_or_replace_becomes_an_upsert_on_the_primary_key() -> None:
    """SQLite's INSERT OR REPLACE becomes an upsert on the table's primary key for PostgreSQL."""
    assert to_postgres("INSERT OR REPLACE INTO leases (ip, mac, state) VALUES (?, ?, ?)",
                       KEYS) == ("INSERT INTO leases (ip, mac, state) VALUES (%s, %s, %s)"
                                 " ON CONFLICT (ip) DO UPDATE SET mac = EXCLUDED.mac,"
                                 " state = EXCLUDED.state")
    assert to_postgres("INSERT OR REPLACE INTO pairs (a, b) VALUES (?, ?)", KEYS) == \
        "INSERT INTO pairs (a, b) VALUES (%s, %s) ON CONFLICT (a, b) DO NOTHING"


def test_insert_or_ignore_and_plain_statements() -> None:
    """INSERT OR IGNORE becomes ON CONFLICT DO NOTHING; other statements only change
    placeholders."""
    assert to_postgres("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", KEYS) == \
        "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    assert to_postgres("SELECT x FROM t WHERE a = ? AND b LIKE '5%'", KEYS) == \
        "SELECT x FROM t WHERE a = %s AND b LIKE '5%%'"


def test_migrations_get_postgres_types() -> None:
    """The SQLite migrations convert to PostgreSQL column types (BIGSERIAL, DOUBLE PRECISION)."""
    statements = migration_to_postgres(MIGRATIONS[0])
    events = next(s for s in statements if s.startswith("CREATE TABLE events"))
    assert "BIGSERIAL PRIMARY KEY" in events and "time DOUBLE PRECISION" in events
    assert all(migration_to_postgres(m) for m in MIGRATIONS)


@given(user=st.text("abcxyz_", min_size=1, max_size=8),
       password=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$*", min_size=4, max_size=20),
       host=st.sampled_from(["db", "10.0.0.1:5433", ""]))
def test_redact_never_shows_the_password(user: str, password: str, host: str) -> None:
    """A database URL is never shown with its password."""
    for url in (f"postgresql://{user}:{password}@{host}/pxe",
                f"postgres://{user}@{host}/pxe?sslmode=require&password={password}"):
        shown = redact(url)
        assert password not in shown and user in shown and "pxe" in shown


def test_unreachable_database_is_a_store_error_without_the_password(tmp_path: Any) -> None:
    """An unreachable database is a StoreError whose text holds no password."""
    pytest.importorskip("psycopg")
    url = f"postgresql://pxe:Sekr3tPass@/pxe?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert "Sekr3tPass" not in str(caught.value)
    assert str(caught.value).startswith("state postgresql://pxe:***@/pxe")


def test_newer_schema_is_refused(pg_cluster: Any) -> None:
    """A database migrated by a newer pxetwist is refused."""
    url = pg_cluster.new_database()
    PostgresStore(url).close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE pxetwist_schema SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this pxetwist"):
        PostgresStore(url)


def test_servers_starting_together_migrate_once(pg_cluster: Any) -> None:
    """Four servers opening one new database at once: one migrates, all end up usable."""
    url = pg_cluster.new_database()
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(stores) == 4
    stores[0].put_lease(LeaseRow("10.0.0.5", "m", "k", "", 1.0, "bound"))
    assert [r.ip for r in stores[3].leases_now()] == ["10.0.0.5"]
    for store in stores:
        store.close()


def test_lost_connection_fails_one_call_then_reconnects(pg_cluster: Any) -> None:
    """The server ends the store's connection: that write fails (its Deferred errbacks, so
    no ACK), the next one connects again and succeeds."""
    url = pg_cluster.new_database()
    store = PostgresStore(url)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    failures: list[Any] = []
    store.put_lease(LeaseRow("10.0.0.5", "m", "k", "", 1.0, "bound")).addErrback(
        failures.append)
    assert len(failures) == 1
    store.put_lease(LeaseRow("10.0.0.6", "m", "k", "", 1.0, "bound"))
    assert [r.ip for r in store.leases_now()] == ["10.0.0.6"]
    store.close()


def test_a_client_binding_elsewhere_frees_its_other_address(pg_cluster: Any) -> None:
    """One client bound on one server, then on another (which did not know): its first
    address is released in the same transaction, so it never holds two."""
    url = pg_cluster.new_database()
    one, two = PostgresStore(url), PostgresStore(url)
    one.bind_leases([(LeaseRow("10.0.0.5", "m", "k", "", 2e9, "bound"), "k")], 1e9)
    two.bind_leases([(LeaseRow("10.0.0.6", "m", "k", "", 2e9, "bound"), "k")], 1e9)
    assert [(r.ip, r.state) for r in one.leases_now()] == [("10.0.0.5", "released"),
                                                            ("10.0.0.6", "bound")]
    one.close()
    two.close()


def test_lease_runs_split_where_a_row_by_row_write_would_differ() -> None:
    """A run holds each address once and each bound client once; order is kept."""
    rows = [(LeaseRow("10.0.0.1", "a", "ka", "", 2e9, "bound"), "ka"),
            (LeaseRow("10.0.0.2", "b", "kb", "", 2e9, "bound"), "kb"),
            (LeaseRow("10.0.0.1", "a", "ka", "", 1e9, "released"), "ka"),
            (LeaseRow("10.0.0.3", "a", "ka", "", 2e9, "bound"), "ka"),
            (LeaseRow("10.0.0.4", "a", "ka", "", 2e9, "bound"), "ka")]
    assert [[row.ip for row, _ in run] for run in lease_runs(rows)] == [
        ["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.3"], ["10.0.0.4"]]
    assert lease_runs([]) == []


def test_one_batch_with_an_address_or_a_client_twice_ends_as_written_in_order(
    pg_cluster: Any
) -> None:
    """A batch binding an address and releasing it, and binding one client twice, leaves
    what writing its rows one by one would: the last state of the address, and the client
    bound to its last address only."""
    url = pg_cluster.new_database()
    store = PostgresStore(url)
    lost = store.bind_leases([
        (LeaseRow("10.0.0.5", "m", "k", "", 2e9, "bound"), "k"),
        (LeaseRow("10.0.0.5", "m", "k", "", 1e9, "released"), "k"),
        (LeaseRow("10.0.0.6", "n", "j", "", 2e9, "bound"), "j"),
        (LeaseRow("10.0.0.7", "n", "j", "", 2e9, "bound"), "j"),
    ], 1e9)
    assert lost.result == {}  # type: ignore[attr-defined]
    assert [(r.ip, r.state) for r in store.leases_now()] == [
        ("10.0.0.5", "released"), ("10.0.0.6", "released"), ("10.0.0.7", "bound")]
    store.close()
