"""The shared state's database goes away and comes back: no ACK for a lease that was not
committed, no crash, /health says degraded meanwhile, recovery without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxetwist.dhcp import options as opt
from pxetwist.metrics import DATABASE_ERRORS
from pxetwist.store_postgres import PostgresStore
from tests import pg
from tests.dhcp.clients import ipxe_rom, requested, server_id
from tests.dhcp.test_server import SERVER, make_rig


@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A cluster of this test's own: it is stopped and started again."""
    reason = pg.missing()
    if reason:
        pytest.skip(reason)
    with pg.cluster() as running:
        yield running


def test_no_ack_while_the_database_is_away_and_recovery_after(
    tmp_path: Path, own_cluster: Any
) -> None:
    """With PostgreSQL stopped a REQUEST gets no ACK; once it is back the server ACKs without a
    restart."""
    url = own_cluster.new_database()
    store = PostgresStore(url)
    rig = make_rig(tmp_path, store=store)
    errors = DATABASE_ERRORS.labels(kind="bind")._value.get()
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER))
    own_cluster.stop()
    try:
        replies = rig.send(ipxe_rom(opt.REQUEST, options=[
            server_id(SERVER), requested(str(offer.yiaddr))]))
        assert replies == []  # not committed: no ACK (and no NAK), the client retries
        assert DATABASE_ERRORS.labels(kind="bind")._value.get() > errors
        status = store.status()
        assert status["ok"] is False and status["error"]
        # and no new client is offered an address it could not be ACKed
        assert not store.writable
        assert rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:09")) == []
    finally:
        own_cluster.start()
    rig.reactor.advance(10)  # the client's retry, later
    [(ack, _)] = rig.send(ipxe_rom(opt.REQUEST, options=[
        server_id(SERVER), requested(str(offer.yiaddr))]))
    assert opt.message_type(ack) == opt.ACK and store.status()["ok"] is True
    [(second, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac="52:54:00:00:00:09"))
    assert opt.message_type(second) == opt.OFFER and store.writable
    assert [(r.ip, r.state) for r in store.leases_now()] == [(str(offer.yiaddr), "bound")]
    store.close()
