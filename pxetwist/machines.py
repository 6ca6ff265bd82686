"""Machine records and their boot lifecycle.

Every MAC that asks for anything gets a record, built from the boot events
DHCP, TFTP and HTTP publish (first/last seen, address, architecture, UUID).
Operators assign an entry to a MAC; the lifecycle then decides what the
machine's ``boot.ipxe`` answers:

``discovered`` -> ``pending`` (entry assigned once) -> ``installing`` (its
script was served) -> ``installed`` (``POST .../installed``) -> boots local.
A permanent assignment is ``assigned`` and always boots its entry; an
explicit "local" assignment is ``local``.

Events and record changes are written to the store in batches (one
transaction every :data:`FLUSH_DELAY` seconds), so a burst of boot events
costs one fsync, not one each.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from pxetwist.events import BootEvent, EventBus, Stage
from pxetwist.store import EventRow, MachineRow, Store

FLUSH_DELAY = 0.25

DISCOVERED = "discovered"
PENDING = "pending"
INSTALLING = "installing"
INSTALLED = "installed"
ASSIGNED = "assigned"
LOCAL = "local"
STATES: tuple[str, ...] = (DISCOVERED, PENDING, INSTALLING, INSTALLED, ASSIGNED, LOCAL)


def machine_json(machine: MachineRow) -> dict[str, Any]:
    """A machine record as the JSON API shows it."""
    return {
        "mac": machine.mac,
        "state": machine.state,
        "entry": machine.entry,
        "once": machine.once,
        "ip": machine.ip,
        "arch": machine.arch,
        "uuid": machine.uuid,
        "first_seen": machine.first_seen,
        "last_seen": machine.last_seen,
        "last_stage": machine.last_stage,
    }


class MachineRegistry:
    """All known machines, kept in memory and mirrored to the store.

    :param store: where records and boot history persist.
    :param events: the bus whose events create and update records.
    :param reactor: the clock (``seconds``, ``callLater``).
    """

    _log = Logger()

    def __init__(self, store: Store, events: EventBus, reactor: Any) -> None:
        self._store = store
        self._events = events
        self._reactor = reactor
        self._machines: dict[str, MachineRow] = {}
        self._mac_by_ip: dict[str, str] = {}
        self._pending_events: list[EventRow] = []
        self._dirty: set[str] = set()
        self._flush_call: Any = None
        self._unsubscribe: Any = None

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the records and start following boot events."""
        self._machines = {m.mac: m for m in self._store.machines_now()}
        self._mac_by_ip = {m.ip: m.mac for m in sorted(self._machines.values(),
                                                       key=lambda m: m.last_seen) if m.ip}
        self._unsubscribe = self._events.subscribe(self._on_event)

    def stop(self) -> Deferred[None]:
        """Stop following events and write what is still queued."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        return self.flush()

    # -- reading ---------------------------------------------------------------------

    def get(self, mac: str) -> MachineRow | None:
        """The record of ``mac`` (normalised ``aa:bb:..``), or ``None``."""
        return self._machines.get(mac)

    def all(self) -> list[MachineRow]:
        """Every record, by MAC."""
        return [self._machines[mac] for mac in sorted(self._machines)]

    def mac_for_ip(self, ip: str) -> str:
        """The MAC last seen at ``ip``, or ``""`` (TFTP and HTTP file fetches carry no MAC)."""
        return self._mac_by_ip.get(ip, "")

    def boot_entry(self, mac: str) -> str | None:
        """The entry ``mac`` must boot now, or ``None`` (menu or local, per config)."""
        machine = self._machines.get(mac)
        if machine is None or machine.entry is None:
            return None
        if machine.state in (PENDING, INSTALLING, ASSIGNED):
            return machine.entry
        return None

    def is_local(self, mac: str) -> bool:
        """Whether ``mac`` was told explicitly to boot from its disk (installed or local)."""
        machine = self._machines.get(mac)
        return machine is not None and machine.state in (INSTALLED, LOCAL)

    # -- lifecycle -------------------------------------------------------------------

    def assign(self, mac: str, entry: str | None, once: bool = True) -> Deferred[MachineRow]:
        """Assign an entry (``once``: until installed; else for good) or ``None`` for local."""
        machine = self._record(mac)
        if entry is None:
            updated = evolve(machine, entry=None, state=LOCAL, once=True)
        else:
            updated = evolve(machine, entry=entry, once=once,
                             state=PENDING if once else ASSIGNED)
        return self._save(updated, f"assigned {entry or 'local'}{' once' if once else ''}")

    def script_served(self, mac: str, entry: str) -> Deferred[MachineRow] | None:
        """Note that a pending machine fetched its entry's script: it is installing."""
        machine = self._machines.get(mac)
        if machine is None or machine.state != PENDING or machine.entry != entry:
            return None
        return self._save(evolve(machine, state=INSTALLING), f"installing {entry}")

    def installed(self, mac: str) -> Deferred[MachineRow]:
        """The machine reports its install done: a one-shot assignment ends, it boots local."""
        machine = self._record(mac)
        if machine.state == ASSIGNED:
            return succeed(machine)
        return self._save(evolve(machine, state=INSTALLED), "installed")

    # -- internals -------------------------------------------------------------------

    def _record(self, mac: str) -> MachineRow:
        machine = self._machines.get(mac)
        if machine is None:
            now = self._reactor.seconds()
            machine = MachineRow(mac, now, now, "", "", "", DISCOVERED, None, True, "")
        return machine

    def _save(self, machine: MachineRow, detail: str) -> Deferred[MachineRow]:
        self._machines[machine.mac] = machine
        self._dirty.discard(machine.mac)
        self._events.publish(Stage.LIFECYCLE, mac=machine.mac, ip=machine.ip, detail=detail)
        d = self._store.put_machine(self._machines[machine.mac])
        return d.addCallback(lambda _: self._machines[machine.mac])

    def _on_event(self, event: BootEvent) -> None:
        if not event.mac:
            return
        machine = self._record(event.mac)
        updated = evolve(
            machine,
            last_seen=event.time,
            ip=event.ip or machine.ip,
            arch=event.arch or machine.arch,
            uuid=event.uuid or machine.uuid,
            last_stage=event.stage,
        )
        self._machines[event.mac] = updated
        if event.ip:
            self._mac_by_ip[event.ip] = event.mac
        self._dirty.add(event.mac)
        self._pending_events.append(
            EventRow(event.time, event.mac, event.ip, event.stage, event.detail, event.arch,
                     event.uuid)
        )
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> Deferred[None]:
        """Write queued events and changed records in one transaction."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        events, self._pending_events = self._pending_events, []
        machines = [self._machines[mac] for mac in sorted(self._dirty)]
        self._dirty.clear()
        if not events and not machines:
            return succeed(None)
        d = self._store.append_events(events, machines)
        d.addErrback(lambda f: self._log.failure("could not store boot history", f))
        return d
