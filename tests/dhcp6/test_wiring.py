"""make_service with [dhcp6]: IPv6 clients get scripts naming http://[addr]:port, explain
says what the MAC matched on, and the config errors are loud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from pxetwist.config import ConfigError, load_text
from pxetwist.service import make_service


def config_text(dhcp6: str) -> str:
    return ("[server]\naddress = 10.77.0.1\nstate = s.sqlite\n[dhcp]\nmode = off\n"
            "[tftp]\nenabled = no\nroot = tftproot\n[http]\nport = 8080\n"
            f"[catalog]\npaths = catalog\n[dhcp6]\n{dhcp6}")


def get(resource: object, url: str) -> bytes:
    client = StubTreq(resource)
    results: list[bytes] = []
    client.get(url).addCallback(lambda r: r.content()).addCallback(results.append)
    client.flush()
    return results[0]


def test_ipv6_clients_get_ipv6_urls_and_explain_row(tmp_path: Path) -> None:
    """The IPv6 listener's app writes http://[fd77::1]:8080 into scripts (IPv4 keeps
    http://10.77.0.1:8080); explain has a dhcpv6 row with matched_on."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir()
    config = load_text(config_text("mode = full\ninterface = lo\naddress = fd77::1\n"
                                   "range_start = fd77::100\nrange_end = fd77::1ff\n"), tmp_path)
    top = make_service(config, MemoryReactorClock())
    http = top.getServiceNamed("http")
    script6 = get(http.factory6.resource, "http://server/api/v1/ipxe/boot.ipxe").decode()
    script4 = get(http.factory.resource, "http://10.77.0.1/api/v1/ipxe/boot.ipxe").decode()
    assert "http://[fd77::1]:8080/" in script6 and "10.77.0.1" not in script6
    assert "http://10.77.0.1:8080/" in script4
    body = json.loads(get(http.factory.resource,
                          "http://10.77.0.1/machines/52:54:00:00:0a:01/explain"))
    [row] = [r for r in body["dhcp"] if r["arch"] == "dhcpv6"]
    assert row["matched_on"] == "not seen"
    top.getServiceNamed("store").store.close()


@pytest.mark.parametrize(("dhcp6", "message"), [
    ("mode = maybe\n", "[dhcp6] mode:"),
    ("mode = full\ninterface = lo\nrange_start = fd77::1\n", "[dhcp6] range_end:"),
    ("mode = full\ninterface = lo\nrange_start = fd77::9\nrange_end = fd77::1\n",
     "[dhcp6] range_end:"),
    ("mode = full\ninterface = lo\nrange_start = fd77::9\nrange_end = fd78::1\n",
     "[dhcp6] range_end:"),
    ("mode = stateless\n", "[dhcp6] interface:"),
    ("mode = stateless\ninterface = nosuch0\n", "[dhcp6] interface:"),
    ("address = 10.0.0.1\n", "[dhcp6] address:"),
    ("address = fe80::1\n", "[dhcp6] address:"),
    ("dns = fd77::53, nope\n", "[dhcp6] dns:"),
    ("lease_time = 100\npreferred_lifetime = 200\n", "[dhcp6] preferred_lifetime:"),
    ("colour = blue\n", "[dhcp6] colour: unknown key"),
])
def test_dhcp6_config_errors_name_the_key(tmp_path: Path, dhcp6: str, message: str) -> None:
    """Every bad [dhcp6] value is one line naming the section and key."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_text(config_text(dhcp6), tmp_path)
