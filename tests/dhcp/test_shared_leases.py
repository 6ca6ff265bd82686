"""Two DHCP servers sharing one PostgreSQL state: an address is never bound to two clients;
the REQUEST that loses the race is NAKed and its client gets another address next time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pxetwist.dhcp import options as opt
from pxetwist.store import LeaseRow
from pxetwist.store_postgres import PostgresStore
from tests.dhcp.clients import ipxe_rom, requested, server_id
from tests.dhcp.test_server import make_rig

A, B = "10.77.0.1", "10.77.0.2"
MAC_1, MAC_2 = "52:54:00:00:01:01", "52:54:00:00:01:02"


def test_request_losing_the_race_is_naked(tmp_path: Path, pg_cluster: Any) -> None:
    """Servers A and B (each its own pool in memory, one database) offer the same first
    free address to two clients; the REQUEST committed second is NAKed, the database holds
    the first client's lease only, and B's next offer to the loser is another address."""
    url = pg_cluster.new_database()
    one = make_rig(tmp_path / "a", server=A, store=PostgresStore(url))
    two = make_rig(tmp_path / "b", server=B, store=PostgresStore(url))
    [(offer_1, _)] = one.send(ipxe_rom(opt.DISCOVER, mac=MAC_1))
    [(offer_2, _)] = two.send(ipxe_rom(opt.DISCOVER, mac=MAC_2))
    assert offer_1.yiaddr == offer_2.yiaddr  # neither knows the other's offer
    [(ack, _)] = one.send(ipxe_rom(opt.REQUEST, mac=MAC_1, options=[
        server_id(A), requested(str(offer_1.yiaddr))]))
    [(nak, _)] = two.send(ipxe_rom(opt.REQUEST, mac=MAC_2, options=[
        server_id(B), requested(str(offer_2.yiaddr))]))
    assert opt.message_type(ack) == opt.ACK and opt.message_type(nak) == opt.NAK
    assert nak.option(opt.MESSAGE) == b"address taken by another server"
    assert [(r.ip, r.mac, r.state) for r in one.store.leases_now()] == [
        (str(offer_1.yiaddr), MAC_1, "bound")]
    [(again, _)] = two.send(ipxe_rom(opt.DISCOVER, mac=MAC_2))
    assert again.yiaddr != offer_1.yiaddr
    [(ack_2, _)] = two.send(ipxe_rom(opt.REQUEST, mac=MAC_2, options=[
        server_id(B), requested(str(again.yiaddr))]))
    assert opt.message_type(ack_2) == opt.ACK
    # the winner renews through the other server (its own went away): same address
    [(renewed, _)] = two.send(ipxe_rom(opt.REQUEST, mac=MAC_1, options=[
        requested(str(offer_1.yiaddr))]))
    assert opt.message_type(renewed) == opt.ACK and renewed.yiaddr == offer_1.yiaddr
    one.store.close()
    two.store.close()


def test_concurrent_binds_of_one_address_have_one_winner(pg_cluster: Any) -> None:
    """Two stores (two servers) on their own threads bind each of 30 addresses to two
    different clients at the same moment: exactly one bind per address wins, and no
    client ends up with two bound addresses."""
    url = pg_cluster.new_database()
    stores = [PostgresStore(url), PostgresStore(url)]
    lost: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    for number in range(30):
        ip = f"10.77.1.{number}"
        gate = threading.Barrier(2, timeout=30)

        def bind(side: int, ip: str = ip, gate: threading.Barrier = gate,
                 n: int = number) -> None:
            row = LeaseRow(ip, f"52:54:00:00:0{side}:{n:02x}", f"c{side}-{n}", "", 2e9,
                           "bound")
            gate.wait()
            d = stores[side].bind_leases([(row, row.client_id)], 1e9)
            d.addCallbacks(lambda taken: lost[side].extend(taken), errors.append)

        threads = [threading.Thread(target=bind, args=(side,)) for side in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert sorted(lost[0] + lost[1]) == sorted(f"10.77.1.{n}" for n in range(30))
    rows = stores[0].leases_now()
    assert len(rows) == 30 and len({r.client_id for r in rows}) == 30
    for store in stores:
        store.close()
