"""Which addresses clients reach us at (for next-server and the URLs in scripts)."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from ipaddress import IPv6Address
from pathlib import Path

from pxetwist.config import Config

_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface ``name``, or ``None`` if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_address6(name: str) -> IPv6Address | None:
    """The first global (non-link-local) IPv6 address of interface ``name``, from
    ``/proc/net/if_inet6``, or ``None``."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[5] == name:
            address = IPv6Address(int(fields[0], 16))
            if not address.is_link_local and not address.is_loopback:
                return address
    return None


def primary_address() -> str | None:
    """The source address the kernel would use for the default route, found by
    ``connect`` on a UDP socket (which sends nothing), or ``None`` with no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            address: str = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("0.") else address


def server_address(config: Config) -> str:
    """``[server] address``, else the address of ``[server] interface``, else the
    primary address, else ``127.0.0.1``."""
    if config.server.address is not None:
        return str(config.server.address)
    if config.server.interface:
        address = interface_address(config.server.interface)
        if address:
            return address
    return primary_address() or "127.0.0.1"


def port_holder(port: int, udp: bool = False) -> str | None:
    """Who has local ``port`` open (``"pid 123 (dnsmasq)"``), from ``/proc``; ``None``
    when it cannot be read (another OS, no permission, already gone)."""
    inodes: set[str] = set()
    for table in ("udp", "udp6") if udp else ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (OSError, ValueError, IndexError):
            continue
    inodes.discard("0")
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    with open(f"/proc/{pid}/comm") as comm:
                        return f"pid {pid} ({comm.read().strip()})"
        except OSError:
            continue
    return None
