"""A lab network: a namespace holding a bridge with the server's address, taps for VMs,
and (optionally) a peer namespace cabled into the bridge for a second DHCP server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

from attrs import define, field


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@define
class LabNet:
    """Names are ``pxl`` + a random tag, at most 15 characters.

    :ivar ns: the server namespace (bridge ``br`` with ``address``/24).
    :ivar peer: the peer namespace (``peer_address``/24 on a veth into the bridge), or "".
    """

    address: str = "10.77.0.1"
    peer_address: str = "10.77.0.2"
    tag: str = field(factory=lambda: uuid.uuid4().hex[:6])
    ns: str = ""
    bridge: str = "pxlbr0"
    peer: str = ""
    taps: list[str] = field(factory=list)

    def up(self, with_peer: bool = False) -> LabNet:
        self.ns = f"pxl{self.tag}"
        ip("netns", "add", self.ns)
        try:
            ip("-n", self.ns, "link", "set", "lo", "up")
            ip("-n", self.ns, "link", "add", self.bridge, "type", "bridge")
            ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", self.bridge)
            ip("-n", self.ns, "link", "set", self.bridge, "up")
            if with_peer:
                self.peer = f"pxp{self.tag}"
                ip("netns", "add", self.peer)
                ip("-n", self.ns, "link", "add", "pxlv0", "type", "veth", "peer", "name",
                   "pxlv1")
                ip("-n", self.ns, "link", "set", "pxlv1", "netns", self.peer)
                ip("-n", self.ns, "link", "set", "pxlv0", "master", self.bridge)
                ip("-n", self.ns, "link", "set", "pxlv0", "up")
                ip("-n", self.peer, "addr", "add", f"{self.peer_address}/24", "dev", "pxlv1")
                ip("-n", self.peer, "link", "set", "pxlv1", "up")
                ip("-n", self.peer, "link", "set", "lo", "up")
        except Exception:
            self.down()
            raise
        return self

    def add_tap(self) -> str:
        name = f"pxlt{len(self.taps)}"
        ip("-n", self.ns, "tuntap", "add", "dev", name, "mode", "tap")
        ip("-n", self.ns, "link", "set", name, "master", self.bridge)
        ip("-n", self.ns, "link", "set", name, "up")
        self.taps.append(name)
        return name

    def exec_argv(self, *argv: str, peer: bool = False) -> list[str]:
        return ["ip", "netns", "exec", self.peer if peer else self.ns, *argv]

    def down(self) -> None:
        """Kill what still runs in our namespaces (only those) and delete them."""
        for ns in (self.peer, self.ns):
            if not ns:
                continue
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns, check=False)
        self.ns = self.peer = ""


@contextlib.contextmanager
def veth_pair(server_address: str, prefix: str = "pxv") -> Iterator[tuple[str, str]]:
    """Two namespaces, server and client, joined by a veth whose ends are named as their
    namespaces (``{prefix}s{tag}``, ``{prefix}c{tag}``); the server end has
    ``server_address`` (CIDR). Yields ``(server, client)``; on the way out kills what still
    runs in them (only those) and deletes them."""
    tag = uuid.uuid4().hex[:6]
    server, client = f"{prefix}s{tag}", f"{prefix}c{tag}"
    ip("netns", "add", server)
    ip("netns", "add", client)
    try:
        ip("link", "add", server, "type", "veth", "peer", "name", client)
        ip("link", "set", server, "netns", server)
        ip("link", "set", client, "netns", client)
        ip("-n", server, "addr", "add", server_address, "dev", server)
        for ns in (server, client):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", ns, "up")
        yield server, client
    finally:
        for ns in (server, client):
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns, check=False)
