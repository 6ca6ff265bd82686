"""Metrics: every HTTP route counted with the status and bytes really sent and its time;
DHCP reply time (issue 13 item 17)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import parse
from tests.dhcp.clients import ipxe_rom, requested, server_id
from tests.dhcp.test_server import SERVER
from tests.dhcp.test_server import make_rig as make_dhcp_rig
from tests.http.helpers import MAC, make_catalog
from tests.loopback_server import running_pxeboot


def value(name: str, **labels: str) -> float:
    """A sample of the default registry, 0 if absent."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics of a running server: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.integration
def test_http_counts_real_status_bytes_and_time_per_route_pattern(tmp_path: Path) -> None:
    """On a real server: a 206 is counted as 206 with the range's bytes, a 416 as 416, the
    boot fast path and a 404 too, under the route pattern (not the raw path), each with a
    response time."""
    make_catalog(tmp_path / "catalog")
    (tmp_path / "tftproot").mkdir()
    files = (("route", "/containers/<entry_id>/files/<name>"),)
    boot = (("route", "/pxe/boot.ipxe"),)
    with running_pxeboot(tmp_path) as base:
        code, body = fetch(base + "/containers/lab/files/vmlinuz", {"Range": "bytes=0-99"})
        assert code == 206 and len(body) == 100
        assert fetch(base + "/containers/lab/files/vmlinuz", {"Range": "bytes=999999-"}
                     )[0] == 416
        _, script = fetch(f"{base}/pxe/boot.ipxe?mac={MAC}")
        assert fetch(base + "/no/such/route/1")[0] == 404
        assert fetch(base + "/no/such/route/2")[0] == 404
        metrics = scrape(base)
    requests = "pxetwist_http_requests_total"
    assert metrics[(requests, (*files, ("status", "206")))] == 1
    assert metrics[(requests, (*files, ("status", "416")))] == 1
    assert (requests, (*files, ("status", "200"))) not in metrics
    assert metrics[("pxetwist_http_bytes_total", files)] >= 100
    assert metrics[("pxetwist_http_response_seconds_count", files)] == 2
    assert metrics[(requests, (*boot, ("status", "200")))] == 1
    assert metrics[("pxetwist_http_bytes_total", boot)] == len(script)
    assert metrics[(requests, (("route", "unmatched"), ("status", "404")))] == 2


def test_dhcp_reply_time_is_observed_from_arrival_to_reply(tmp_path: Path) -> None:
    """The ACK's reply time includes the lease write it waits for (0.3 s on the clock)."""
    rig = make_dhcp_rig(tmp_path)
    original = rig.store.put_leases
    held: list[Deferred[None]] = []

    def slow(rows: object) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        held.append(d)
        rig.reactor.callLater(0.3, lambda: original(rows).chainDeferred(d))  # type: ignore
        return d

    rig.store.put_leases = slow  # type: ignore[method-assign]
    count = value("pxetwist_dhcp_reply_seconds_count")
    total = value("pxetwist_dhcp_reply_seconds_sum")
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER))
    assert rig.send(ipxe_rom(opt.REQUEST, options=[server_id(SERVER),
                                                   requested(str(offer.yiaddr))])) == []
    rig.reactor.advance(0.3)
    assert [opt.message_type(parse(data)) for data, _ in rig.main.take()] == [opt.ACK]
    assert value("pxetwist_dhcp_reply_seconds_count") == count + 2
    assert 0.29 < value("pxetwist_dhcp_reply_seconds_sum") - total < 0.31
