"""Machine records built from boot events, and the install lifecycle."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from pxetwist.events import EventBus, Stage
from pxetwist.machines import FLUSH_DELAY, MachineRegistry
from pxetwist.store import Store

MAC = "52:54:00:00:00:01"


def registry(tmp_path: Path) -> tuple[MachineRegistry, EventBus, Store, Clock]:
    clock = Clock()
    clock.advance(1000)
    store = Store(tmp_path / "state.sqlite")
    bus = EventBus(clock)
    machines = MachineRegistry(store, bus, clock)
    machines.start()
    return machines, bus, store, clock


def test_events_create_and_update_records(tmp_path: Path) -> None:
    """Any MAC in an event gets a record with first/last seen, IP, arch and UUID."""
    machines, bus, store, clock = registry(tmp_path)
    bus.publish(Stage.DHCP_OFFER, mac=MAC, ip="10.0.0.5", arch="bios", uuid="u-1")
    clock.advance(5)
    bus.publish(Stage.HTTP_SCRIPT, mac=MAC, ip="10.0.0.5")
    record = machines.get(MAC)
    assert record is not None
    assert (record.first_seen, record.last_seen) == (1000.0, 1005.0)
    assert (record.ip, record.arch, record.uuid) == ("10.0.0.5", "bios", "u-1")
    assert record.state == "discovered" and record.last_stage == Stage.HTTP_SCRIPT


def test_history_and_records_are_flushed_in_batches(tmp_path: Path) -> None:
    """Events are written after FLUSH_DELAY in one batch and survive a restart."""
    machines, bus, store, clock = registry(tmp_path)
    bus.publish(Stage.DHCP_OFFER, mac=MAC, ip="10.0.0.5")
    bus.publish(Stage.DHCP_ACK, mac=MAC, ip="10.0.0.5")
    assert store.machines_now() == []
    clock.advance(FLUSH_DELAY)
    history: list[list[object]] = []
    store.history(MAC).addCallback(history.append)
    assert [e.stage for e in history[0]] == [Stage.DHCP_OFFER, Stage.DHCP_ACK]  # type: ignore[attr-defined]
    assert [m.mac for m in store.machines_now()] == [MAC]


def test_one_shot_lifecycle(tmp_path: Path) -> None:
    """pending -> installing (its kernel fetched; a script alone is not enough) ->
    installed, after which it boots local."""
    machines, bus, store, clock = registry(tmp_path)
    machines.assign(MAC, "debian", once=True)
    assert machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    assert machines.boot_entry(MAC) == "debian"
    assert machines.script_served(MAC, "debian") is None
    assert machines.boot_file_fetched(MAC, "other") is None
    assert machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    machines.boot_file_fetched(MAC, "debian")
    assert machines.get(MAC).state == "installing"  # type: ignore[union-attr]
    assert machines.boot_entry(MAC) == "debian"
    machines.installed(MAC)
    assert machines.boot_entry(MAC) is None and machines.is_local(MAC)
    machines.stop()
    store.close()

    reopened = Store(tmp_path / "state.sqlite")
    again = MachineRegistry(reopened, EventBus(clock), clock)
    again.start()
    assert again.get(MAC).state == "installed"  # type: ignore[union-attr]


def test_permanent_assignment_and_local(tmp_path: Path) -> None:
    """A permanent assignment keeps booting its entry even after 'installed'; None is local."""
    machines, *_ = registry(tmp_path)
    machines.assign(MAC, "rescue", once=False)
    machines.installed(MAC)
    assert machines.boot_entry(MAC) == "rescue"
    machines.assign(MAC, None)
    assert machines.boot_entry(MAC) is None and machines.is_local(MAC)


def test_bulk_assignment_is_all_or_nothing_in_memory_too(tmp_path: Path) -> None:
    """assign_many writes every row in one transaction; when the store fails, no record
    changes and no lifecycle event is published."""
    from twisted.internet.defer import fail

    machines, bus, store, clock = registry(tmp_path)
    rows = [("52:54:00:00:00:01", "lab", True, "a", {"k": "v"}),
            ("52:54:00:00:00:02", None, False, None, None)]
    store.put_machines = lambda _: fail(RuntimeError("disk full"))  # type: ignore[method-assign]
    failed: list[object] = []
    machines.assign_many(rows).addErrback(failed.append)
    assert failed and machines.count() == 0 and bus.recent() == []
    del store.put_machines
    done: list[object] = []
    machines.assign_many(rows).addCallback(done.append)
    assert [m.state for m in done[0]] == ["pending", "local"]  # type: ignore[attr-defined]
    assert machines.get("52:54:00:00:00:01").vars == (("k", "v"),)  # type: ignore[union-attr]
    assert len(bus.recent()) == 2


def test_an_event_keeps_every_field_it_does_not_set() -> None:
    """A boot event updates last_seen, ip, arch, uuid and last_stage of a record and keeps
    every other field (``_seen`` builds the record field by field)."""
    import attrs

    from pxetwist.events import BootEvent
    from pxetwist.machines import _seen
    from pxetwist.store import MachineRow

    before = MachineRow("52:54:00:00:00:01", 1.0, 2.0, "10.0.0.5", "bios", "u-1", "pending",
                        "debian", False, "dhcp.ack", 3, "web1", (("a", "b"),), "shim")
    after = _seen(before, BootEvent(7, 9.0, before.mac, "10.0.0.6", Stage.TFTP_START, "f",
                                    "efi64", "u-2"))
    changed = {"last_seen": 9.0, "ip": "10.0.0.6", "arch": "efi64", "uuid": "u-2",
               "last_stage": Stage.TFTP_START}
    assert after == attrs.evolve(before, **changed)
    kept = _seen(before, BootEvent(8, 10.0, before.mac, "", Stage.HTTP_FILE))
    assert (kept.ip, kept.arch, kept.uuid) == (before.ip, before.arch, before.uuid)
    assert {f.name for f in attrs.fields(MachineRow)} - set(changed) == {
        "mac", "first_seen", "state", "entry", "once", "assignment", "hostname", "vars",
        "loader"}
