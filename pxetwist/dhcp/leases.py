"""The address pool of full mode: who holds which address, and making that durable.

Leases live in memory for speed and in the store for durability. An ACK may
only leave once its lease is committed (``synchronous=FULL``). One commit is
on its way to disk at a time; the leases bound meanwhile go together in the
next transaction (group commit), so a DHCP storm costs one fsync per batch,
not one per client, and batches grow with the load.

Offers are kept in memory only, for :data:`OFFER_HOLD` seconds: an address
offered to one client is not offered to another meanwhile. After a restart
the pool is rebuilt from the store, so no ACKed address is handed out twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxetwist.config import Dhcp6Config, DhcpConfig
from pxetwist.metrics import DHCP_LEASES
from pxetwist.store import LeaseRow, LeaseTakenError, Store

#: Seconds an offered address stays held for the client it was offered to.
OFFER_HOLD = 60.0
#: Seconds a declined address stays out of the pool.
DECLINE_HOLD = 600.0

BOUND = "bound"
RELEASED = "released"
DECLINED = "declined"

Address = IPv4Address | IPv6Address


class LeasePool:
    """Allocation and bookkeeping for ``[dhcp] range_start..range_end``.

    Clients are identified by a key (``id:<option 61 hex>`` or ``mac:<mac>``; DHCPv6:
    ``duid:<hex>/<iaid>``). The same pool serves ``[dhcp6]``'s IPv6 range: IPv4 and
    IPv6 leases share the store's table and each pool loads its own family.

    :param clock: ``seconds`` and ``callLater`` (times in leases are epoch seconds).
    """

    _log = Logger()

    def __init__(self, config: DhcpConfig | Dhcp6Config, store: Store, clock: Any) -> None:
        assert config.range_start is not None and config.range_end is not None
        self._config = config
        self._store = store
        self._clock = clock
        self._address: type[IPv4Address] | type[IPv6Address] = type(config.range_start)
        self.network: IPv4Network | IPv6Network
        if isinstance(config, DhcpConfig):
            self.network = IPv4Network(f"{config.range_start}/{config.netmask}", strict=False)
            reservations: Mapping[str, Address] = config.reservations
        else:
            self.network = IPv6Network(f"{config.range_start}/64", strict=False)
            reservations = {}
        self._reservations = reservations
        self._start = int(config.range_start)
        self._end = int(config.range_end)
        self._by_ip: dict[str, LeaseRow] = {}
        self._by_key: dict[str, str] = {}
        self._offers: dict[str, tuple[str, float]] = {}  # ip -> (key, until)
        self._offer_of: dict[str, str] = {}  # key -> ip offered to it
        self._reserved_ips = {str(ip): mac for mac, ip in reservations.items()}
        self._next_free = self._start
        #: Rows waiting for the next commit, each with the client key that must hold its
        #: address in a shared store (or nobody) and the Deferred of whoever waits for it
        #: (``None`` for the old address a client's new lease frees: nobody waits).
        self._batch: list[tuple[LeaseRow, str, Deferred[None] | None]] = []
        self._flush_call: Any = None
        self._writing = False  # a commit is on its way to disk

    def load(self) -> None:
        """Rebuild the pool from the store (startup)."""
        for row in self._store.leases_now():
            if not isinstance(ip_address(row.ip), self._address):
                continue  # the other family's pool
            self._by_ip[row.ip] = row
            self._by_key[row.client_id or "mac:" + row.mac] = row.ip
        # Counted when scraped, not on every change: counting walks every lease, and
        # doing it per ACK made a DHCP storm quadratic (a quarter of the server's time
        # at 10,000 leases).
        DHCP_LEASES.set_function(self.in_use)

    # -- reading ---------------------------------------------------------------------

    def lease_of(self, key: str) -> LeaseRow | None:
        ip = self._by_key.get(key)
        return self._by_ip.get(ip) if ip else None

    def holder(self, ip: str) -> LeaseRow | None:
        """The lease that keeps ``ip`` from others now (bound or declined, unexpired)."""
        row = self._by_ip.get(ip)
        if row is None or row.state == RELEASED or row.expires <= self._clock.seconds():
            return None
        return row

    def holds(self, ip: Address, key: str, mac: str) -> bool:
        """Whether this client (same client id or MAC key, same MAC) holds a bound,
        unexpired lease on ``ip``: only such a client may give it back or decline it."""
        row = self.holder(str(ip))
        return (row is not None and row.state == BOUND and row.mac == mac
                and (row.client_id or "mac:" + row.mac) == key)

    def in_use(self) -> int:
        now = self._clock.seconds()
        return sum(1 for r in self._by_ip.values() if r.state == BOUND and r.expires > now)

    def in_pool(self, ip: Address) -> bool:
        return self._start <= int(ip) <= self._end or str(ip) in self._reserved_ips

    # -- allocation ------------------------------------------------------------------

    def share(self, part: int, parts: int) -> None:
        """Servers sharing this pool (``[dhcp] peers``): this one hands out never-used
        addresses from part ``part`` of ``parts`` equal slices of the range first, and
        from the others' only once its own is used up. Started at the same address, two
        servers offered the same addresses to two clients at once, and the REQUEST
        committed second was NAKed (a third of the REQUESTs at 500/s); apart, they meet
        only when a slice runs out."""
        size = self._end - self._start + 1
        self._next_free = self._start + size * part // parts

    def available_for(self, ip: Address, key: str, mac: str) -> bool:
        """Whether ``ip`` may be given to this client now."""
        return self.unavailable_because(ip, key, mac) is None

    def unavailable_because(self, ip: Address, key: str, mac: str) -> str | None:
        """Why ``ip`` may not be given to this client now (a NAK's message), or ``None``
        when it may."""
        text = str(ip)
        reserved_for = self._reserved_ips.get(text)
        if reserved_for is not None:
            return None if reserved_for == mac else "address reserved for another client"
        if not self.in_pool(ip):
            return "address not in the pool"
        holder = self.holder(text)
        if holder is not None and (holder.client_id or "mac:" + holder.mac) != key:
            return ("address declined as in use, held back" if holder.state == DECLINED
                    else "address belongs to another client")
        offer = self._offers.get(text)
        if offer and offer[0] != key and offer[1] > self._clock.seconds():
            return "address offered to another client"
        return None

    def can_commit(self) -> bool:
        """Whether the store can commit a lease now (see :attr:`Store.writable`)."""
        return self._store.writable

    def allocate(self, key: str, mac: str, requested: Address | None) -> Address | None:
        """An address for this client (its reservation, its previous address, the one it
        asks for, or a free one), held for it for :data:`OFFER_HOLD` seconds; ``None``
        when the pool is exhausted."""
        reservation = self._reservations.get(mac)
        candidates: list[Address] = []
        if reservation is not None:
            candidates.append(reservation)
        offered = self._offer_of.get(key)
        if offered is not None:  # a repeated DISCOVER gets the same offer, not a new one
            candidates.append(self._address(offered))
        previous = self._by_key.get(key)
        if previous is not None:
            candidates.append(self._address(previous))
        if requested is not None:
            candidates.append(requested)
        for ip in candidates:
            if self.available_for(ip, key, mac):
                return self._hold(ip, key)
        for ip in self._free_addresses():
            if self.available_for(ip, key, mac):
                return self._hold(ip, key)
        return None

    def _free_addresses(self) -> Iterator[Address]:
        """Never-used addresses first (round robin), then the longest-expired ones."""
        size = self._end - self._start + 1
        for step in range(size):
            number = self._start + (self._next_free - self._start + step) % size
            address = self._address(number)
            if str(address) not in self._by_ip:
                self._next_free = number + 1 if number < self._end else self._start
                yield address
        expired = sorted((r.expires, r.ip) for r in self._by_ip.values()
                         if self.holder(r.ip) is None)
        for _, ip in expired:
            yield self._address(ip)

    def _hold(self, ip: Address, key: str) -> Address:
        text = str(ip)  # once: an address's text costs microseconds, per DHCP packet
        previous = self._offer_of.get(key)
        if previous is not None and previous != text:
            self._offers.pop(previous, None)
        self._offers[text] = (key, self._clock.seconds() + OFFER_HOLD)
        self._offer_of[key] = text
        if len(self._offers) > 4 * (self._end - self._start + 1) + 100:
            now = self._clock.seconds()
            self._offers = {k: v for k, v in self._offers.items() if v[1] > now}
            self._offer_of = {v[0]: k for k, v in self._offers.items()}
        return ip

    def forget_offer(self, key: str) -> None:
        """The client took another server's offer."""
        ip = self._offer_of.pop(key, None)
        if ip is not None:
            self._offers.pop(ip, None)

    # -- changes (durable) -----------------------------------------------------------

    def bind(self, ip: Address, key: str, mac: str, name: str) -> Deferred[None]:
        """Bind ``ip`` to the client for ``lease_time``; fires once it is on disk."""
        row = LeaseRow(str(ip), mac, key, name, self._clock.seconds() + self._config.lease_time,
                       BOUND)
        self._offers.pop(row.ip, None)
        self._offer_of.pop(key, None)
        return self._set(row)

    def release(self, ip: Address, key: str, mac: str) -> Deferred[None] | None:
        """The client gives ``ip`` back; its claim to it is kept for next time.
        ``None`` (nothing changes) unless it :meth:`holds` the lease."""
        row = self._by_ip.get(str(ip))
        if row is None or not self.holds(ip, key, mac):
            return None
        return self._set(LeaseRow(row.ip, row.mac, row.client_id, row.hostname,
                                  self._clock.seconds(), RELEASED))

    def decline(self, ip: Address, key: str, mac: str) -> Deferred[None] | None:
        """The client found ``ip`` in use: keep it out of the pool for a while.
        ``None`` (nothing changes) unless it :meth:`holds` the lease."""
        if not self.in_pool(ip) or not self.holds(ip, key, mac):
            return None
        self._by_key.pop(key, None)
        return self._set(LeaseRow(str(ip), "", "declined", "",
                                  self._clock.seconds() + DECLINE_HOLD, DECLINED), key)

    def _unlink_holder(self, ip: str) -> None:
        """Forget which client ``ip`` was held by, before it gets a new row."""
        old = self._by_ip.get(ip)
        if old is not None:
            old_key = old.client_id or "mac:" + old.mac
            if self._by_key.get(old_key) == ip:
                del self._by_key[old_key]

    def _set(self, row: LeaseRow, owner: str | None = None) -> Deferred[None]:
        self._unlink_holder(row.ip)
        self._by_ip[row.ip] = row
        if row.state != DECLINED:
            previous = self._by_key.get(row.client_id)
            old_row = self._by_ip.get(previous) if previous and previous != row.ip else None
            if old_row is not None:  # one address per client: free the old one
                freed = LeaseRow(old_row.ip, old_row.mac, old_row.client_id, old_row.hostname,
                                 self._clock.seconds(), RELEASED)
                self._by_ip[old_row.ip] = freed
                self._batch.append((freed, freed.client_id, None))
            self._by_key[row.client_id] = row.ip
        done: Deferred[None] = Deferred()
        self._batch.append((row, row.client_id if owner is None else owner, done))
        self._schedule_flush()
        return done

    def _taken(self, mine: LeaseRow, winner: LeaseRow) -> None:
        """Another server holds ``mine.ip`` in the shared store: believe the store."""
        if self._by_key.get(mine.client_id) == mine.ip:
            del self._by_key[mine.client_id]
        self.learn(winner)

    def learn(self, row: LeaseRow) -> None:
        """Another server sharing the state wrote this lease: take it as this pool's (a
        lease of the other address family is not this pool's business)."""
        if not isinstance(ip_address(row.ip), self._address):
            return
        self._unlink_holder(row.ip)
        self._by_ip[row.ip] = row
        if row.state != DECLINED:
            self._by_key[row.client_id or "mac:" + row.mac] = row.ip

    def _schedule_flush(self) -> None:
        if self._flush_call is None and not self._writing and self._batch:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        self._writing = True
        d = self._store.bind_leases([(row, owner) for row, owner, _ in batch],
                                    self._clock.seconds())

        def written(lost: dict[str, LeaseRow]) -> None:
            for row, _, done in batch:
                winner = lost.get(row.ip)
                if winner is not None:
                    self._taken(row, winner)
                if done is None:
                    continue
                if winner is None:
                    done.callback(None)
                else:
                    done.errback(LeaseTakenError(f"{row.ip} is held by {winner.mac or 'a decline'}"
                                                 " (another server)"))

        def failed(failure: Failure) -> None:
            ips = [row.ip for row, _, _ in batch]
            self._log.failure("lease commit of {count} leases failed ({ips}): no ACK for "
                              "them", failure, count=len(ips),
                              ips=", ".join(ips[:10]) + (", ..." if len(ips) > 10 else ""))
            for _, _, done in batch:
                if done is not None:
                    done.errback(failure)

        def next_batch(result: object) -> None:
            self._writing = False
            self._schedule_flush()  # what was bound while this batch was written

        d.addCallbacks(written, failed)
        d.addBoth(next_batch)
