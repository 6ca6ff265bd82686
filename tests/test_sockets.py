"""Listening UDP sockets with room for a boot storm's burst (pxetwist.sockets)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.internet import reactor as real_reactor

from pxetwist.config import load_text
from pxetwist.dhcp.service import DhcpService
from pxetwist.events import EventBus
from pxetwist.sockets import LISTEN_RCVBUF, enlarge_receive_buffer
from pxetwist.store import Store


def test_a_listening_socket_gets_a_larger_receive_buffer() -> None:
    """A boot storm's burst of requests must fit: the buffer asked for is granted (as root,
    past ``net.core.rmem_max``; otherwise up to it), and never shrinks the default."""
    size = 1024 * 1024
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        granted = enlarge_receive_buffer(sock, size)
        assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert granted >= max(default, size if os.geteuid() == 0 else min(size, rmem_max))


def test_the_dhcp_ports_get_the_larger_receive_buffer(tmp_path: Path) -> None:
    """Both DHCP ports (67 and 4011; here ephemeral ones on a real reactor) ask for
    LISTEN_RCVBUF: hundreds of DISCOVERs of a rack powering on at once must queue, not
    drop (a dropped DISCOVER costs its client 4 s)."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir()
    config = load_text("[server]\naddress = 127.0.0.1\n[dhcp]\nmode = proxy\nport = 0\n"
                       "proxy_port = 0\n[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n",
                       tmp_path)
    store = Store(tmp_path / "state.sqlite")
    service = DhcpService(config, store, EventBus(real_reactor), real_reactor, "127.0.0.1",
                          "http://127.0.0.1:8080")
    service.privilegedStartService()
    try:
        granted = [port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                   for port in service._ports]
    finally:
        for port in service._ports:
            port.stopListening()
        store.close()
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    wanted = LISTEN_RCVBUF if os.geteuid() == 0 else min(LISTEN_RCVBUF, rmem_max)
    assert len(granted) == 2 and all(size >= wanted for size in granted), granted
