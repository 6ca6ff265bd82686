"""Several servers, one state: apply what the other servers change.

With a PostgreSQL state, an assignment, a toggle or a label made through any server's
API is announced by the database (LISTEN/NOTIFY, see :mod:`pxetwist.store_postgres`)
and taken by every other server a moment after it commits: its next answer uses it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from pxetwist.catalog import CatalogService
from pxetwist.dhcp.leases import LeasePool
from pxetwist.events import EventBus
from pxetwist.machines import MachineRegistry
from pxetwist.store import LeaseRow
from pxetwist.store_postgres import PostgresStore, machine_from_announcement


class SharedStateService(Service):
    """Follows the other servers' changes to machines and catalog settings."""

    name = "shared-state"
    _log = Logger()

    def __init__(self, store: PostgresStore, machines: MachineRegistry,
                 catalog: CatalogService, events: EventBus) -> None:
        self.store = store
        self.machines = machines
        self.catalog = catalog
        self.events = events
        #: Full mode's lease pool, told of the leases the other servers write.
        self.pool: LeasePool | None = None

    def startService(self) -> None:
        super().startService()
        self.store.listen(self.changed)

    def changed(self, table: str | None, key: Any, server: str) -> Any:
        """One announcement (``None``: maybe some were missed, read everything)."""
        if table == "leases" and isinstance(key, dict):
            if self.pool is not None:
                self.pool.learn(LeaseRow(str(key["ip"]), str(key["mac"]),
                                         str(key["client_id"]), str(key["hostname"]),
                                         float(key["expires"]), str(key["state"])))
            return None
        if table == "events" and isinstance(key, dict):  # a boot another server saw
            self.events.publish(
                str(key.get("stage", "")), mac=str(key.get("mac", "")),
                ip=str(key.get("ip", "")), detail=str(key.get("detail", "")),
                arch=str(key.get("arch", "")), uuid=str(key.get("uuid", "")),
                server=server or "another server", time=float(key.get("time", 0.0)))
            return None
        if table == "machines" and isinstance(key, dict):  # the changed row itself
            self.machines.replace_from_store(str(key["mac"]), machine_from_announcement(key))
            return None
        if table == "machines" and isinstance(key, str):
            d = self.store.machine(key).addCallback(
                lambda row: self.machines.replace_from_store(key, row))
        elif table == "catalog_settings":
            d = self.store.settings().addCallback(self.catalog.settings_changed)
        elif table is None:
            d = self.store.machines().addCallback(self.machines.replace_all_from_store)
            d.addCallback(lambda _: self.store.settings().addCallback(
                self.catalog.settings_changed))
        else:
            return None
        d.addErrback(lambda f: self._log.warn("another server's change of {table} {key} not"
                                              " read: {error}", table=table, key=key,
                                              error=f.getErrorMessage()))
        return d
