"""Listening UDP sockets that survive a burst: a boot storm sends its requests at once.

The kernel's default receive buffer (~208 KiB, a few hundred small datagrams) overflows
when hundreds of machines power on together, and each dropped request costs its client a
whole retry timeout (TFTP 1 s or more, DHCP 4 s). The DHCP and TFTP services ask for a
larger one on their listening sockets; it is a limit, not memory taken up front.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

#: Receive buffer asked for on each listening socket: ~2,000 RRQs queued at once (the kernel
#: counts each small datagram as ~1 KiB and doubles what it is given).
LISTEN_RCVBUF = 2 * 1024 * 1024


def enlarge_receive_buffer(sock: socket.socket, size: int = LISTEN_RCVBUF) -> int:
    """Ask for a ``size`` receive buffer (forced as root). :returns: the bytes granted."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:  # not root: SO_RCVBUF, capped at net.core.rmem_max
            continue
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


def enlarge_port_buffers(ports: Iterable[Any]) -> list[int]:
    """:func:`enlarge_receive_buffer` for each listening port that has a socket (the
    tests' fake ports and ``None`` have none). :returns: the bytes granted to each."""
    return [enlarge_receive_buffer(sock) for port in ports
            if (sock := getattr(port, "socket", None)) is not None]
