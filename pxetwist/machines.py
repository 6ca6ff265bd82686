"""Machine records and their boot lifecycle.

Every MAC that asks for anything gets a record, built from the boot events
DHCP, TFTP and HTTP publish (first/last seen, address, architecture, UUID).
Operators assign an entry to a MAC; the lifecycle then decides what the
machine's ``boot.ipxe`` answers:

``discovered`` -> ``pending`` (entry assigned once) -> ``installing`` (it fetched
the entry's kernel or image, or its script when the kernel is on a mirror we never see)
-> ``installed`` (the callback, ``.../installed``) -> boots local.
A permanent assignment is ``assigned`` and always boots its entry; an
explicit "local" assignment is ``local``.

Events and record changes are written to the store in batches (one
transaction every :data:`FLUSH_DELAY` seconds), so a burst of boot events
costs one fsync, not one each.

Anyone on the network can make a record (a boot script request with a made-up
MAC), so records that nobody configured are bounded: beyond ``max_unassigned``
of them the one seen longest ago is forgotten. A machine an operator ever
assigned (or set to local) is never forgotten.

A machine reports its install done with a per-machine callback token
(:func:`callback_token`), so the installer needs no admin token.
"""

from __future__ import annotations

import hashlib
import hmac
from bisect import bisect_right
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

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

#: Unassigned, never-configured records kept at most (``[boot] max_machines``).
MAX_UNASSIGNED = 10_000


def callback_token(secret: str, mac: str, assignment: int) -> str:
    """The token that lets the machine ``mac`` report its ``assignment``-th assignment
    installed: an HMAC-SHA256 of both, keyed by the server's secret (hex, 32 digits)."""
    message = f"pxetwist-installed {mac} {assignment}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def _unconfigured(machine: MachineRow) -> bool:
    """Whether no operator ever touched this record (it may be forgotten)."""
    return (machine.state == DISCOVERED and machine.entry is None and machine.assignment == 0
            and machine.loader is None)


#: The ``loader`` of :meth:`MachineRegistry.assign` that leaves the machine's as it is.
KEEP_LOADER = "keep"


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
        "hostname": machine.hostname,
        "vars": dict(machine.vars),
        "loader": machine.loader,
    }


def _seen(m: MachineRow, event: BootEvent) -> MachineRow:
    """``m`` updated by one of its boot events. Built field by field, not with
    ``attrs.evolve`` (three times slower, and this runs twice per DHCP exchange);
    tests/test_machines.py checks that every other field is kept."""
    return MachineRow(m.mac, m.first_seen, event.time, event.ip or m.ip,
                      event.arch or m.arch, event.uuid or m.uuid, m.state, m.entry, m.once,
                      event.stage, m.assignment, m.hostname, m.vars, m.loader)


class MachineRegistry:
    """All known machines, kept in memory and mirrored to the store.

    :param store: where records and boot history persist.
    :param events: the bus whose events create and update records.
    :param reactor: the clock (``seconds``, ``callLater``).
    :param max_unassigned: unconfigured records kept at most; beyond, the one seen
        longest ago is forgotten (record and history).
    """

    _log = Logger()

    def __init__(self, store: Store, events: EventBus, reactor: Any,
                 max_unassigned: int = MAX_UNASSIGNED) -> None:
        self._store = store
        self._events = events
        self._reactor = reactor
        self._max_unassigned = max_unassigned
        self._secret = ""
        self._machines: dict[str, MachineRow] = {}
        #: unconfigured MACs, the one seen longest ago first
        self._unassigned: OrderedDict[str, None] = OrderedDict()
        self._forgotten: set[str] = set()
        self._mac_by_ip: dict[str, str] = {}
        self._pending_events: list[EventRow] = []
        self._dirty: set[str] = set()
        self._flush_call: Any = None
        self._unsubscribe: Any = None

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the records and start following boot events."""
        self._secret = self._store.secret_now("installed-callback")
        self._machines = {m.mac: m for m in self._store.machines_now()}
        by_age = sorted(self._machines.values(), key=lambda m: m.last_seen)
        self._mac_by_ip = {m.ip: m.mac for m in by_age if m.ip}
        self._unassigned = OrderedDict((m.mac, None) for m in by_age if _unconfigured(m))
        self._make_room(0)
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

    def count(self) -> int:
        """How many records there are."""
        return len(self._machines)

    def page(self, limit: int, after: str | None = None) -> tuple[list[MachineRow], str | None]:
        """Up to ``limit`` records by MAC, those after ``after``; and the MAC to ask the
        next page after, or ``None`` when this is the last page."""
        macs = sorted(self._machines)
        start = bisect_right(macs, after) if after is not None else 0
        chosen = macs[start:start + limit]
        more = start + limit < len(macs)
        return [self._machines[mac] for mac in chosen], (chosen[-1] if more else None)

    def callback_token(self, mac: str) -> str | None:
        """The token ``mac`` may report its current assignment installed with (``?token=``
        of ``/api/v1/machines/{mac}/installed``); ``None`` if it was never assigned."""
        machine = self._machines.get(mac)
        if machine is None or machine.assignment == 0:
            return None
        return callback_token(self._secret, mac, machine.assignment)

    def installed_url(self, base_url: str, mac: str) -> str | None:
        """The URL the installer of ``mac`` calls when done (for templates), or ``None``."""
        token = self.callback_token(mac)
        if token is None:
            return None
        return f"{base_url}/api/v1/machines/{quote(mac)}/installed?token={token}"

    def token_matches(self, mac: str, token: str) -> bool:
        """Whether ``token`` is the callback token of ``mac``'s current assignment
        (compared in constant time)."""
        expected = self.callback_token(mac)
        return expected is not None and hmac.compare_digest(expected.encode(),
                                                            token.encode())

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

    def assign(self, mac: str, entry: str | None, once: bool = False,
               hostname: str | None = None, vars: dict[str, str] | None = None,
               loader: str | None = KEEP_LOADER) -> Deferred[MachineRow]:
        """Assign an entry (``once``: until installed; else for good) or ``None`` for local.
        Each assignment gets a new number, which voids the previous callback token.
        ``hostname`` and ``vars``, when given, replace the machine's (else they stay);
        ``loader`` (``ipxe``, ``shim``, ``None``: ``[boot] efi_loader``) likewise unless
        :data:`KEEP_LOADER`."""
        updated, detail = self._assigned(mac, entry, once, hostname, vars, loader)
        return self._save(updated, detail)

    def assign_many(self, rows: list[tuple[str, str | None, bool, str | None,
                                           dict[str, str] | None, str | None]]
                    ) -> Deferred[list[MachineRow]]:
        """:meth:`assign` for each ``(mac, entry, once, hostname, vars, loader)`` row,
        written in one transaction: all rows or none."""
        done = [self._assigned(*row) for row in rows]
        d = self._store.put_machines([machine for machine, _ in done])

        def stored(_: object) -> list[MachineRow]:
            for machine, detail in done:
                self._remember(machine, detail)
            return [machine for machine, _ in done]

        return d.addCallback(stored)

    def _assigned(self, mac: str, entry: str | None, once: bool, hostname: str | None,
                  vars: dict[str, str] | None,
                  loader: str | None = KEEP_LOADER) -> tuple[MachineRow, str]:
        machine = self._record(mac)
        number = machine.assignment + 1
        if loader != KEEP_LOADER:
            machine = evolve(machine, loader=loader)
        if hostname is not None:
            machine = evolve(machine, hostname=hostname)
        if vars is not None:
            machine = evolve(machine, vars=tuple(sorted(vars.items())))
        if entry is None:
            updated = evolve(machine, entry=None, state=LOCAL, once=True, assignment=number)
        else:
            updated = evolve(machine, entry=entry, once=once, assignment=number,
                             state=PENDING if once else ASSIGNED)
        return updated, f"assigned {entry or 'local'}{' once' if once else ''}"

    def loader(self, mac: str) -> str | None:
        """The machine's own EFI loader (``ipxe``/``shim``), or ``None``: the config's."""
        machine = self._machines.get(mac)
        return machine.loader if machine is not None else None

    def set_loader(self, mac: str, loader: str | None) -> Deferred[MachineRow]:
        """Give ``mac`` its own EFI loader, or ``None`` to follow ``[boot] efi_loader``."""
        return self._save(evolve(self._record(mac), loader=loader),
                          f"loader {loader or 'from [boot] efi_loader'}")

    def script_served(self, mac: str, entry: str,
                      kernel_seen: bool = True) -> Deferred[MachineRow] | None:
        """Note that ``mac`` fetched ``entry``'s script. It is installing only when we
        shall not see it fetch the kernel or image (``kernel_seen`` false: they are on a
        mirror); otherwise :meth:`boot_file_fetched` says so."""
        if kernel_seen:
            return None
        return self.boot_file_fetched(mac, entry, "script (its kernel is on a mirror)")

    def boot_file_fetched(self, mac: str, entry: str,
                          what: str = "kernel") -> Deferred[MachineRow] | None:
        """Note that a pending machine fetched its entry's kernel (or image): it is
        installing. ``None`` when that changes nothing."""
        machine = self._machines.get(mac)
        if machine is None or machine.state != PENDING or machine.entry != entry:
            return None
        return self._save(evolve(machine, state=INSTALLING), f"installing {entry} ({what})")

    def installed(self, mac: str, how: str = "") -> Deferred[MachineRow]:
        """The machine reports its install done: a one-shot assignment ends, it boots local.
        A permanent assignment keeps booting its entry (the report is an event). A replay
        changes nothing and publishes nothing.

        :param how: who reported it, for the event (``callback from 10.0.0.5``).
        """
        machine = self._record(mac)
        suffix = f" ({how})" if how else ""
        if machine.state == INSTALLED:
            return succeed(machine)
        if machine.state == ASSIGNED:
            self._events.publish(Stage.LIFECYCLE, mac=mac, ip=machine.ip,
                                 detail=f"installed reported{suffix}; permanent assignment "
                                        f"keeps booting {machine.entry}")
            return succeed(machine)
        return self._save(evolve(machine, state=INSTALLED), f"installed{suffix}")

    def replace_from_store(self, mac: str, stored: MachineRow | None) -> None:
        """Another server sharing the state changed ``mac``'s record (``None``: forgot it):
        take its version. What this server saw of the machine and has not written yet
        (last seen, address, stage) is kept on top of it."""
        mine = self._machines.get(mac)
        if stored is None:
            if mine is not None and mac not in self._dirty:
                self._machines.pop(mac)
                self._unassigned.pop(mac, None)
            return
        if mine is not None and mac in self._dirty and mine.last_seen > stored.last_seen:
            stored = evolve(stored, last_seen=mine.last_seen, ip=mine.ip, arch=mine.arch,
                            uuid=mine.uuid, last_stage=mine.last_stage)
        self._machines[mac] = stored
        if stored.ip:
            self._mac_by_ip[stored.ip] = mac
        if _unconfigured(stored):
            self._unassigned[mac] = None
        else:
            self._unassigned.pop(mac, None)

    def replace_all_from_store(self, stored: list[MachineRow]) -> None:
        """Take every record of the shared state (after missed change announcements)."""
        for machine in stored:
            self.replace_from_store(machine.mac, machine)

    # -- internals -------------------------------------------------------------------

    def _record(self, mac: str) -> MachineRow:
        machine = self._machines.get(mac)
        if machine is None:
            now = self._reactor.seconds()
            machine = MachineRow(mac, now, now, "", "", "", DISCOVERED, None, True, "")
        return machine

    def _save(self, machine: MachineRow, detail: str) -> Deferred[MachineRow]:
        self._remember(machine, detail)
        d = self._store.put_machine(self._machines[machine.mac])
        return d.addCallback(lambda _: self._machines[machine.mac])

    def _remember(self, machine: MachineRow, detail: str) -> None:
        self._machines[machine.mac] = machine
        self._unassigned.pop(machine.mac, None)
        self._forgotten.discard(machine.mac)
        self._dirty.discard(machine.mac)
        self._events.publish(Stage.LIFECYCLE, mac=machine.mac, ip=machine.ip, detail=detail)

    def _on_event(self, event: BootEvent) -> None:
        if not event.mac or event.server != self._events.server:
            return  # another server's event: that server records it
        if event.mac not in self._machines:
            self._make_room(1)
        updated = _seen(self._record(event.mac), event)
        self._machines[event.mac] = updated
        if _unconfigured(updated):
            self._unassigned[event.mac] = None
            self._unassigned.move_to_end(event.mac)
            self._forgotten.discard(event.mac)
        if event.ip:
            self._mac_by_ip[event.ip] = event.mac
        self._dirty.add(event.mac)
        self._pending_events.append(
            EventRow(event.time, event.mac, event.ip, event.stage, event.detail, event.arch,
                     event.uuid)
        )
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_DELAY, self.flush)

    def _make_room(self, new: int) -> None:
        """Forget the unconfigured records seen longest ago until ``new`` more fit."""
        while self._unassigned and len(self._unassigned) + new > self._max_unassigned:
            mac, _ = self._unassigned.popitem(last=False)
            machine = self._machines.pop(mac)
            if self._mac_by_ip.get(machine.ip) == mac:
                del self._mac_by_ip[machine.ip]
            self._dirty.discard(mac)
            self._forgotten.add(mac)
        if self._forgotten and self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> Deferred[None]:
        """Write queued events and changed records in one transaction, and delete the
        forgotten records."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        forgotten, self._forgotten = sorted(self._forgotten), set()
        events = [e for e in self._pending_events if e.mac in self._machines]
        self._pending_events = []
        machines = [self._machines[mac] for mac in sorted(self._dirty)]
        self._dirty.clear()
        if not events and not machines and not forgotten:
            return succeed(None)
        d = self._store.append_events(events, machines, forgotten)
        d.addErrback(lambda f: self._log.failure("could not store boot history", f))
        return d
