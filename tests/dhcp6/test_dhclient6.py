"""isc-dhcp-client's ``dhclient -6`` against pxetwist's DHCPv6, full and stateless, in a
namespace pair made here (IPv6 only: no IPv4 address on the link); and the IPv6 lease
table surviving kill -9.

The client asks for option 59 and sends option 61 (as a UEFI PXE client does), so the
Reply's boot URL is read from the environment dhclient hands its script. Nothing
touches the machine's interfaces. Needs root, iproute2 and dhclient.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import veth_pair
from tests.dhcp import test_dhclient as dhclient_v4
from tests.markers import in_namespaces

REPO = Path(__file__).resolve().parents[2]
SERVER = "fd79::1"

pytestmark = in_namespaces("dhclient", "ip",
                           why="dhclient and ip (isc-dhcp-client, iproute2) are needed")

#: Option 59 asked for, option 61 = 7 (UEFI x64) sent; the script records what it got.
DHCLIENT_CONF = """\
option dhcp6.bootfile-url code 59 = string;
option dhcp6.client-arch-type code 61 = unsigned integer 16;
send dhcp6.client-arch-type 7;
also request dhcp6.bootfile-url;
"""
SCRIPT = """#!/bin/sh
env | grep -E '^(reason|new_|old_)' >> "{out}"
echo ---- >> "{out}"
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def settled(netns: str) -> None:
    """Wait (bounded) until no address on the namespace's veth is tentative (DAD)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = run("ip", "-n", netns, "-6", "addr", "show", "dev", netns).stdout
        if "inet6" in shown and "tentative" not in shown:
            return
        time.sleep(0.1)
    raise AssertionError(f"{netns}: addresses still tentative")


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """Two namespaces, server (fd79::1/64, no DAD) and client, joined by a veth."""
    with veth_pair(f"{SERVER}/64", "px6") as (server, client):
        run("ip", "-n", server, "addr", "del", f"{SERVER}/64", "dev", server)
        run("ip", "-n", server, "addr", "add", f"{SERVER}/64", "dev", server, "nodad")
        settled(server)
        settled(client)
        yield server, client


class Server(dhclient_v4.Server):
    """pxetwist with ``[dhcp6] mode`` in the server namespace (IPv4 DHCP off)."""

    def __init__(self, folder: Path, netns: str, mode: str) -> None:
        super().__init__(folder, netns)
        self.config.write_text(
            f"[server]\naddress = 127.0.0.1\ninterface = {netns}\nstate = state.sqlite\n"
            "[dhcp]\nmode = off\n"
            f"[dhcp6]\nmode = {mode}\nrange_start = fd79::100\nrange_end = fd79::1ff\n"
            "lease_time = 600\npreferred_lifetime = 300\ndns = fd79::53\n"
            "[tftp]\nenabled = no\nroot = tftproot\n"
            "[http]\nport = 8080\n[catalog]\npaths = catalog\n")

    def leases6(self) -> list[tuple[str, str, str, str]]:
        conn = sqlite3.connect(self.folder / "state.sqlite")
        try:
            return conn.execute("SELECT ip, mac, client_id, state FROM leases ORDER BY ip"
                                ).fetchall()
        finally:
            conn.close()


def dhclient6(netns: str, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                             str]:
    """One ``dhclient -6`` run; returns it and what its script saw."""
    conf = folder / "dhclient6.conf"
    conf.write_text(DHCLIENT_CONF)
    out = folder / "script.out"
    script = folder / "script.sh"
    script.write_text(SCRIPT.format(out=out))
    script.chmod(0o755)
    out.write_text("")
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "dhclient", "-6", "-1", "-v", "-cf", str(conf),
         "-sf", str(script), "-lf", str(folder / "dhclient6.leases"),
         "-pf", str(folder / "dhclient6.pid"), *args, netns],
        capture_output=True, text=True, timeout=60)
    return done, out.read_text()


def mac_of(netns: str) -> str:
    shown = run("ip", "-n", netns, "-o", "link", "show", "dev", netns).stdout
    return shown.split("link/ether ")[1][:17]


def test_full_mode_leases_with_boot_url_then_releases(netns: tuple[str, str],
                                                      tmp_path: Path) -> None:
    """dhclient -6 gets an address from the pool and option 59 tftp://[fd79::1]/ipxe.efi;
    the lease row has the MAC (from the DUID-LLT) and the DUID; Release frees it."""
    server_ns, client_ns = netns
    server = Server(tmp_path, server_ns, "full")
    server.start()
    try:
        got, seen = dhclient6(client_ns, tmp_path)
        assert got.returncode == 0, got.stderr
        assert "reason=BOUND6" in seen, seen + got.stderr
        assert "new_dhcp6_bootfile_url=tftp://[fd79::1]/ipxe.efi" in seen
        assert "new_dhcp6_name_servers=fd79::53" in seen
        leased = seen.split("new_ip6_address=")[1].split()[0]
        [(ip, mac, client_id, state)] = server.leases6()
        assert (ip, state) == (leased, "bound")
        assert mac == mac_of(client_ns)
        assert client_id.startswith("duid:0001")  # dhclient's DUID-LLT
        released, _ = dhclient6(client_ns, tmp_path, "-r")
        assert released.returncode == 0, released.stderr
        deadline = time.monotonic() + 5
        while server.leases6()[0][3] != "released" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.leases6()[0][3] == "released"
    finally:
        server.stop()


def test_stateless_answers_information_request_with_boot_url(netns: tuple[str, str],
                                                             tmp_path: Path) -> None:
    """dhclient -6 -S (Information-Request) from a boot client gets option 59 and DNS,
    no address, and nothing is leased."""
    server_ns, client_ns = netns
    server = Server(tmp_path, server_ns, "stateless")
    server.start()
    try:
        got, seen = dhclient6(client_ns, tmp_path, "-S")
        assert got.returncode == 0, got.stderr
        assert "new_dhcp6_bootfile_url=tftp://[fd79::1]/ipxe.efi" in seen, seen + got.stderr
        assert "new_ip6_address" not in seen
        assert server.leases6() == []
    finally:
        server.stop()


def test_ipv6_leases_survive_kill_9(netns: tuple[str, str], tmp_path: Path) -> None:
    """After SIGKILL and a restart, the Replied lease is in the store and another client
    (another MAC, another DUID) gets another address."""
    server_ns, client_ns = netns
    server = Server(tmp_path, server_ns, "full")
    server.start()
    got, seen = dhclient6(client_ns, tmp_path)
    assert got.returncode == 0, got.stderr
    leased = seen.split("new_ip6_address=")[1].split()[0]
    server.stop(signal.SIGKILL)
    assert [(row[0], row[3]) for row in server.leases6()] == [(leased, "bound")]
    server.start()
    try:
        other = tmp_path / "other"
        other.mkdir()
        # another machine: another MAC and its own link-local address (the kernel keeps
        # the old one when the MAC changes, and the server's neighbour entry for it)
        run("ip", "-n", client_ns, "link", "set", client_ns, "address", "52:54:00:77:77:77")
        run("ip", "-n", client_ns, "-6", "addr", "flush", "dev", client_ns, "scope", "link")
        run("ip", "-n", client_ns, "addr", "add", "fe80::5054:ff:fe77:7777/64", "dev",
            client_ns, "nodad")
        settled(client_ns)
        second, seen2 = dhclient6(client_ns, other)
        assert second.returncode == 0, second.stderr
        assert "new_ip6_address=" in seen2
        assert seen2.split("new_ip6_address=")[1].split()[0] != leased
    finally:
        server.stop()
