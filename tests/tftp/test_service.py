"""The TFTP service's listening sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pxetwist.tftp.service import enlarge_receive_buffer


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
