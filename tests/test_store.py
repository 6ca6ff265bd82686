"""The store: a real SQLite file, and a real PostgreSQL database (the tests taking
``state_location`` run once per backend): migrations from empty, durability across reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import pytest_twisted

from pxetwist.store import (
    EVENTS_PER_MACHINE,
    MIGRATIONS,
    EventRow,
    LeaseRow,
    MachineRow,
    SettingRow,
    Store,
    StoreError,
)
from pxetwist.store_postgres import open_store


def lease(ip: str, mac: str = "52:54:00:00:00:01") -> LeaseRow:
    return LeaseRow(ip, mac, "01" + mac.replace(":", ""), "host", 1000.0, "bound")


def test_new_file_is_migrated(tmp_path: Path) -> None:
    """A new state file gets every table, the latest schema version, and WAL mode."""
    store = Store(tmp_path / "sub" / "state.sqlite")
    store.close()
    conn = sqlite3.connect(tmp_path / "sub" / "state.sqlite")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"leases", "machines", "catalog_settings", "events"} <= tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_data_survives_close_and_reopen(state_location: Path | str) -> None:
    """Leases, machines and settings written before close are there after reopening."""
    path = state_location
    store = open_store(path)
    store.put_leases([lease("10.0.0.5"), lease("10.0.0.6", "52:54:00:00:00:02")])
    store.put_machine(MachineRow("52:54:00:00:00:01", 1.0, 2.0, "10.0.0.5", "bios", "",
                                 "pending", "debian", True, "dhcp.ack"))
    store.put_setting(SettingRow("debian", False, "Debian 12", 3, True, "quiet"))
    store.close()

    reopened = open_store(path)
    assert [row.ip for row in reopened.leases_now()] == ["10.0.0.5", "10.0.0.6"]
    machines = reopened.machines_now()
    assert machines[0].entry == "debian" and machines[0].once is True
    assert reopened.settings_now()["debian"] == SettingRow("debian", False, "Debian 12", 3,
                                                           True, "quiet")
    reopened.close()


def test_only_one_default_setting(state_location: Path | str) -> None:
    """Making an entry the default clears the flag on every other entry in one transaction."""
    store = open_store(state_location)
    store.put_setting(SettingRow("a", None, None, None, True, None))
    store.put_setting(SettingRow("b", None, None, None, True, None), clear_other_defaults=True)
    settings = store.settings_now()
    assert settings["a"].is_default is False and settings["b"].is_default is True
    store.close()


def test_delete_lease(state_location: Path | str) -> None:
    """A deleted lease is gone."""
    store = open_store(state_location)
    store.put_lease(lease("10.0.0.5"))
    store.delete_lease("10.0.0.5")
    assert store.leases_now() == []
    store.close()


def test_history_is_bounded_per_machine(state_location: Path | str) -> None:
    """Each machine keeps at most EVENTS_PER_MACHINE events, the newest ones."""
    store = open_store(state_location)
    mac = "52:54:00:00:00:01"
    rows = [EventRow(float(i), mac, "", "dhcp.ack", str(i), "", "")
            for i in range(EVENTS_PER_MACHINE + 20)]
    store.append_events(rows)
    store.append_events([EventRow(0.0, "52:54:00:00:00:02", "", "dhcp.ack", "other", "", "")])
    history = store.history(mac)
    result = []
    history.addCallback(result.append)
    events = result[0]
    assert len(events) == EVENTS_PER_MACHINE
    assert events[0].detail == "20" and events[-1].detail == str(EVENTS_PER_MACHINE + 19)
    store.close()


def test_batches_larger_than_one_statement(state_location: Path | str) -> None:
    """Leases, events, machines and forgotten MACs beyond one statement's worth of rows
    (many rows go to one statement) are all stored: the last row of an address wins,
    each history is pruned to its newest events across appends, forgetting deletes all."""
    store = open_store(state_location)
    leases = [lease(f"10.0.{i // 250}.{i % 250}", f"52:54:00:00:{i // 256:02x}:{i % 256:02x}")
              for i in range(400)]
    store.put_leases([*leases, lease("10.0.0.0", "52:54:00:00:ff:99")])
    stored = {row.ip: row for row in store.leases_now()}
    assert len(stored) == 400 and stored["10.0.0.0"].mac == "52:54:00:00:ff:99"
    macs = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(600)]
    machines = [MachineRow(mac, 1.0, 2.0, "", "", "", "discovered", None, True, "dhcp.ack")
                for mac in macs]
    for start in (0, 300):
        store.append_events([EventRow(float(i), mac, "", "dhcp.ack", str(i), "", "")
                             for mac in macs[:2] for i in range(start, start + 300)]
                            + [EventRow(0.0, mac, "", "dhcp.offer", "", "", "") for mac in macs],
                            machines)
    assert len(store.machines_now()) == 600
    for mac in macs[:2]:
        result: list[list[EventRow]] = []
        store.history(mac).addCallback(result.append)
        details = [e.detail for e in result[0] if e.stage == "dhcp.ack"]
        assert len(result[0]) == EVENTS_PER_MACHINE and details[-1] == "599"
    store.append_events([], forget=[*macs, *(f"52:54:00:01:{i:02x}:00" for i in range(256))])
    assert store.machines_now() == []
    result = []
    store.history(macs[5]).addCallback(result.append)
    assert result == [[]]
    store.close()


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not a database is a StoreError naming it, and is left untouched."""
    path = tmp_path / "state.sqlite"
    junk = b"this is not sqlite" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match=r"state file .*state.sqlite: file is not a database"):
        Store(path)
    assert path.read_bytes() == junk


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    """A state file under a path that cannot be a folder is a StoreError naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="state file .*cannot create its folder"):
        Store(blocker / "state.sqlite")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file from a newer pxetwist is refused rather than silently misread."""
    path = tmp_path / "state.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this pxetwist"):
        Store(path)


@pytest_twisted.ensureDeferred
async def test_threaded_store_runs_off_the_reactor_thread(
    state_location: Path | str, reactor: object
) -> None:
    """With a reactor, SQL runs on the store's own thread and Deferreds fire with results."""
    import threading

    store = open_store(state_location, reactor)  # type: ignore[arg-type]
    store.start()
    try:
        seen: list[str] = []
        original = store._write

        def spy(statements: object) -> None:
            seen.append(threading.current_thread().name)
            original(statements)  # type: ignore[arg-type]

        store._write = spy  # type: ignore[method-assign]
        await store.put_lease(lease("10.0.0.9"))
        rows = await store.leases()
        assert [row.ip for row in rows] == ["10.0.0.9"]
        assert seen and seen[0] != threading.main_thread().name
    finally:
        store.close()


def test_history_bound_holds_across_batches_and_machines(state_location: Path | str) -> None:
    """A batch with more events for a MAC than are kept leaves the newest, across batches,
    and does not touch another MAC's history."""
    store = open_store(state_location)
    a, b = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
    store.append_events([EventRow(0.0, a, "", "dhcp.ack", f"old{i}", "", "") for i in range(5)])
    store.append_events([EventRow(1.0, mac, "", "http.script", f"{mac[-1]}{i}", "", "")
                         for i in range(EVENTS_PER_MACHINE + 3) for mac in (a, b)])
    store.append_events([EventRow(2.0, a, "", "http.kernel", "last", "", "")])
    result: list[list[EventRow]] = []
    store.history(a).addCallback(result.append)
    store.history(b).addCallback(result.append)
    history_a, history_b = result
    assert len(history_a) == len(history_b) == EVENTS_PER_MACHINE
    assert [e.detail for e in history_a][:2] == ["a4", "a5"]
    assert history_a[-1].detail == "last"
    assert history_b[0].detail == "b3" and history_b[-1].detail == f"b{EVENTS_PER_MACHINE + 2}"
    store.close()


def test_machines_of_an_older_file_get_no_hostname_and_no_vars(tmp_path: Path) -> None:
    """A state file from before hostname/vars (issue 15) migrates: its machines keep their
    assignment, with hostname "" and no vars; both are stored and read back afterwards."""
    import sqlite3

    from attrs import evolve

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(str(path))
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version={number}")
    conn.execute("INSERT INTO machines (mac, first_seen, last_seen, state, entry, once,"
                 " assignment) VALUES ('52:54:00:00:00:01', 1, 2, 'pending', 'lab', 1, 3)")
    conn.commit()
    conn.close()
    store = Store(path)
    [machine] = store.machines_now()
    assert (machine.entry, machine.assignment, machine.hostname, machine.vars) == \
        ("lab", 3, "", ())
    store.put_machine(evolve(machine, hostname="n1", vars=(("a", "1"), ("b", "x y"))))
    assert store.machines_now()[0].vars == (("a", "1"), ("b", "x y"))


def test_secret_is_made_once_and_kept(state_location: Path | str) -> None:
    """A named secret is random, made the first time, and the same after reopening."""
    store = open_store(state_location)
    first = store.secret_now("callback")
    assert len(first) == 64 and store.secret_now("callback") == first
    assert store.secret_now("other") != first
    store.close()
    reopened = open_store(state_location)
    assert reopened.secret_now("callback") == first
    reopened.close()


def test_machine_fields_round_trip(state_location: Path | str) -> None:
    """Every field of a machine record (vars, loader, no entry) reads back as written, and
    writing it again replaces it."""
    from attrs import evolve

    store = open_store(state_location)
    machine = MachineRow("52:54:00:00:00:01", 1.5, 2.25, "10.0.0.5", "efi64", "u-1",
                         "assigned", None, False, "http.kernel", 4, "node1",
                         (("a", "1"), ("b", "x y")), "shim")
    store.put_machines([machine, evolve(machine, mac="52:54:00:00:00:02", loader=None)])
    assert store.machines_now()[0] == machine
    store.put_machine(evolve(machine, state="local", entry="debian"))
    assert [(m.state, m.entry) for m in store.machines_now()] == [("local", "debian"),
                                                                  ("assigned", None)]
    store.close()
