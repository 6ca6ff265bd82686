"""The one place where every part of pxetwist meets.

:func:`make_service` assembles a :class:`PxeService` (a ``MultiService``) from
small builders that a test can call alone. Named children: ``store``,
``events``, ``catalog``, ``dhcp``, ``tftp``, ``http``. Low ports are bound in
``privilegedStartService`` by the protocol services themselves, so ``twistd
-u/-g`` can drop root afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from treq.client import HTTPClient
from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from pxetwist.catalog import CatalogService
from pxetwist.chain import chain_files
from pxetwist.config import Config
from pxetwist.dhcp.leases import BOUND, LeasePool
from pxetwist.dhcp.service import build_dhcp_service
from pxetwist.dhcp6.service import build_dhcp6_service
from pxetwist.dualstack import BACKLOG, DualStackTCPServer
from pxetwist.events import BootEvent, EventBus
from pxetwist.http.app import PxeApp
from pxetwist.http.unattended import Unattended
from pxetwist.machine_source import MachineSource
from pxetwist.machines import MachineRegistry
from pxetwist.metrics import BOOT_EVENTS, ByLabel
from pxetwist.netinfo import port_holder, server_address
from pxetwist.shared import SharedStateService
from pxetwist.store import Store
from pxetwist.store_postgres import PostgresStore, open_store
from pxetwist.tftp.service import build_tftp_service

#: Seconds between two status lines in the log.
STATUS_INTERVAL = 300


class StoreService(Service):
    """Runs the store's SQL thread while the server runs; closes the file at the end."""

    name = "store"

    def __init__(self, store: Store) -> None:
        self.store = store

    def startService(self) -> None:
        self.store.start()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.store.close()
        return None


class EventsService(Service):
    """Owns the boot-event bus and the machine records fed by it."""

    name = "events"

    def __init__(self, bus: EventBus, machines: MachineRegistry) -> None:
        self.bus = bus
        self.machines = machines
        self._unsubscribe: Any = None

    def startService(self) -> None:
        self.machines.start()
        self._unsubscribe = self.bus.subscribe(_count_event)
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
        return self.machines.stop()


_EVENTS_BY_STAGE = ByLabel(BOOT_EVENTS)


def _count_event(event: BootEvent) -> None:
    _EVENTS_BY_STAGE(event.stage).inc()


class PxeService(MultiService):
    """The whole server. Logs a status line every :data:`STATUS_INTERVAL` seconds and one
    line at shutdown.

    :ivar address: the IPv4 address clients reach us at.
    :ivar base_url: the URL written into iPXE scripts.
    :ivar log_observer: when set, registered on twistd's application as its log
        observer (twistd reads it from there before it starts logging); ``tap`` uses
        it to filter debug events unless ``--verbose``.
    """

    _log = Logger()

    def __init__(self, config: Config, address: str, base_url: str, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.address = address
        self.base_url = base_url
        status = TimerService(STATUS_INTERVAL, self.log_status)
        status.clock = reactor
        status.setName("status")
        status.setServiceParent(self)
        self.log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def status(self) -> dict[str, int]:
        """Counts for the status line: leases in use, transfers running, boot events."""
        counts: dict[str, int] = {}
        for name in ("dhcp", "dhcp6"):
            dhcp: Any = self.namedServices.get(name)
            if dhcp is not None and hasattr(dhcp, "leases_in_use"):
                counts["leases"] = counts.get("leases", 0) + dhcp.leases_in_use()
        tftp: Any = self.namedServices.get("tftp")
        if tftp is not None and hasattr(tftp, "active_transfers"):
            counts["transfers"] = tftp.active_transfers
        events: Any = self.namedServices.get("events")
        if events is not None:
            counts["events"] = events.bus.last_seq
        return counts

    def log_status(self) -> None:
        counts = self.status()
        self._log.info(
            "status: {leases} leases in use, {transfers} transfers running, "
            "{events} boot events since start",
            leases=counts.get("leases", 0),
            transfers=counts.get("transfers", 0),
            events=counts.get("events", 0),
        )

    def privilegedStartService(self) -> None:
        """Bind every child's ports; a port that cannot be bound ends the process with one
        line naming the section and key, the port and who holds it (when ``/proc`` says)."""
        Service.privilegedStartService(self)
        for service in self:
            try:
                service.privilegedStartService()
            except (CannotListenError, OSError) as e:
                line = f"pxetwist: {bind_failure(self.config, service.name, e)}"
                # twistd has sent stderr to the log by now: say it in the log (a daemon's
                # only output) and on the real stderr (the operator's terminal)
                self._log.critical("{line}", line=line)
                print(line, file=sys.__stderr__)
                raise SystemExit(1) from None

    def startService(self) -> None:
        self._log.info("pxetwist serving at {address}; boot scripts from {url}",
                       address=self.address, url=self.base_url)
        super().startService()

    def stopService(self) -> Deferred[None]:
        counts = self.status()
        self._log.info(
            "pxetwist stopping with {leases} active leases and {transfers} transfers running",
            leases=counts.get("leases", 0),
            transfers=counts.get("transfers", 0),
        )
        result: Deferred[None] = super().stopService()
        return result


#: The config keys of the ports each named service binds.
_PORT_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "http": (("http", "port"),), "tftp": (("tftp", "port"),),
    "dhcp": (("dhcp", "port"), ("dhcp", "proxy_port")),
}


def bind_failure(config: Config, name: str | None, error: Exception) -> str:
    """One line for a port that could not be bound by the service called ``name``."""
    socket_error = getattr(error, "socketError", error)
    reason = getattr(socket_error, "strerror", None) or str(socket_error)
    port = getattr(error, "port", None)
    keys = [(section, key) for section, key in _PORT_KEYS.get(name or "", ())
            if port is None or getattr(getattr(config, section), key) == port]
    if not keys:
        return f"{name or 'a service'}: cannot listen: {reason}"
    parts = []
    for section, key in keys:
        number = getattr(getattr(config, section), key)
        holder = port_holder(number, udp=name != "http") if number else None
        parts.append(f"[{section}] {key} {number}" + (f" (held by {holder})" if holder else ""))
    return f"{' / '.join(parts)}: cannot listen: {reason}"


def build_store(config: Config, reactor: Any) -> Store:
    """Open (and migrate) the state: the SQLite file or the PostgreSQL database of
    ``[server] state``. :raises StoreError: if it cannot be used."""
    return open_store(config.server.database or config.server.state, reactor,
                      str(server_address(config)))


def build_catalog(config: Config, store: Store, reactor: Any) -> CatalogService:
    """The catalog service over ``[catalog] paths``."""
    return CatalogService(config.catalog, store, reactor)


def build_http(config: Config, app: PxeApp, reactor: Any, app6: PxeApp | None = None
               ) -> IService:
    """The HTTP listener serving the Klein app on ``[http] interface``:``port``; an empty
    interface serves both families, IPv6 clients from ``app6`` (scripts with the IPv6
    base URL) when given."""
    app6 = app6 or app
    if not config.http.interface:  # both families (pxetwist.dualstack)
        both = DualStackTCPServer(config.http.port, Site(app.resource()), reactor,
                                  Site(app6.resource()))
        both.setName("http")
        return both
    family = "tcp6" if ":" in config.http.interface else "tcp"
    description = f"{family}:{config.http.port}:backlog={BACKLOG}"
    description += ":interface=" + config.http.interface.replace(":", "\\:")
    served = app6 if family == "tcp6" else app
    service = strports.service(description, Site(served.resource()), reactor=reactor)
    service.setName("http")
    return service


def build_machine_source(config: Config, reactor: Any) -> MachineSource | None:
    """The external machine source of ``[boot] api_url``, or ``None`` when it is empty."""
    if not config.boot.api_url:
        return None
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
    return MachineSource(config.boot.api_url, HTTPClient(agent), reactor)


def current_lease_mac(pool: LeasePool) -> Callable[[str], str]:
    """IP -> the MAC of the bound, unexpired lease on it, or ``""``: whom an HTTP fetch
    without ``?mac=`` from that IP is charged to."""

    def lease_mac(ip: str) -> str:
        row = pool.holder(ip)
        return row.mac if row is not None and row.state == BOUND else ""

    return lease_mac


def in_thread(reactor: Any, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Run blocking ``work`` in the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), work, *args)
def _either(lease_mac: Callable[[str], str] | None, pool6: LeasePool | None
            ) -> Callable[[str], str] | None:
    """The MAC charged for an IP: the IPv4 pool's answer, else the IPv6 pool's."""
    if pool6 is None:
        return lease_mac
    mac6 = current_lease_mac(pool6)
    if lease_mac is None:
        return mac6
    first = lease_mac

    def either(ip: str) -> str:
        return (mac6 if ":" in ip else first)(ip)

    return either


def _with_dhcp6(explain: Callable[[str], list[dict[str, Any]]] | None,
                identity: Callable[[str], dict[str, Any]]
                ) -> Callable[[str], list[dict[str, Any]]]:
    """Explain's DHCP rows plus one saying how DHCPv6 knew the MAC (and its DUID)."""

    def rows(mac: str) -> list[dict[str, Any]]:
        return [*(explain(mac) if explain is not None else []), identity(mac)]

    return rows


def make_service(config: Config, reactor: Any, packet_dumps: bool = True) -> PxeService:
    """Assemble the whole server from ``config``, using ``reactor`` for all I/O and time;
    ``packet_dumps``: a debug event per DHCP datagram (``twistd pxeboot --verbose``).

    :raises pxetwist.store.StoreError: when the state file cannot be used.
    """
    address = server_address(config)
    base_url = config.base_url(address)
    top = PxeService(config, address, base_url, reactor)

    store = build_store(config, reactor)
    StoreService(store).setServiceParent(top)

    # with a shared state, every event is tagged with the server that saw it
    bus = EventBus(reactor, server=address if config.server.database else "")
    machines = MachineRegistry(store, bus, reactor, config.boot.max_machines)
    EventsService(bus, machines).setServiceParent(top)

    catalog = build_catalog(config, store, reactor)
    catalog.setServiceParent(top)
    shared = None
    if isinstance(store, PostgresStore):  # other servers may change the shared state
        shared = SharedStateService(store, machines, catalog, bus)
        shared.setServiceParent(top)

    running = ["http"]
    explain: Callable[[str], list[dict[str, Any]]] | None = None
    lease_mac = None
    if config.dhcp.mode != "off":
        dhcp = build_dhcp_service(config, store, bus, reactor, address, base_url,
                                  machines.loader, packet_dumps)
        dhcp.setServiceParent(top)
        explain = dhcp.policy.explain
        if dhcp.pool is not None:
            lease_mac = current_lease_mac(dhcp.pool)
            if shared is not None:
                shared.pool = dhcp.pool
        running.append("dhcp")
    dhcp6 = None
    if config.dhcp6.mode != "off":
        dhcp6 = build_dhcp6_service(config, store, bus, reactor)
        dhcp6.setServiceParent(top)
        explain = _with_dhcp6(explain, dhcp6.identity)
        running.append("dhcp6")
    unattended = Unattended(machines, base_url, config.dhcp.reservations)
    if config.tftp.enabled:
        generated, linked = chain_files(config, catalog, machines, base_url,
                                        unattended.grub_args)
        build_tftp_service(config, bus, reactor, generated, machines.mac_for_ip,
                           linked).setServiceParent(top)
        running.append("tftp")
    source = build_machine_source(config, reactor)
    app = PxeApp(config, catalog, machines, store, bus, base_url, tuple(running), explain,
                 source, lease_mac=lease_mac, run_in_thread=partial(in_thread, reactor),
                 unattended=unattended)
    app6 = None
    if dhcp6 is not None:  # IPv6 clients get scripts naming http://[addr]:port
        app6 = PxeApp(config, catalog, machines, store, bus, dhcp6.base_url, tuple(running),
                      explain, source, lease_mac=_either(lease_mac, dhcp6.pool),
                      run_in_thread=partial(in_thread, reactor),
                      unattended=Unattended(machines, dhcp6.base_url,
                                            config.dhcp.reservations))
    build_http(config, app, reactor, app6).setServiceParent(top)
    return top
