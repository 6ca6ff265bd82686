"""CPU cost per ACK of the TFTP session's hot path, without sockets or a reactor.

    PYTHONPATH=<checkout> python bench/tftp_hot_path.py

Drives :class:`~pxetwist.tftp.session.TftpSession` through a 64 MiB transfer (blksize 1468)
with a socket that sends nowhere and a ``task.Clock``, handing it each ACK as the reactor
would (no spin), and prints the best of 7 runs per window size. Uses only the session's
constructor and ``datagramReceived``, so the same script measures any checkout: run it with
``PYTHONPATH`` set to each of two and compare. A timing, never asserted.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.task import Clock

from pxetwist.tftp import packet
from pxetwist.tftp.files import FileSource
from pxetwist.tftp.session import TftpSession

CLIENT = ("127.0.0.1", 2000)
BLKSIZE = 1468
DATA = bytes(range(256)) * (64 * 4096)  # 64 MiB


class _Socket:
    """Unconnected, sends nowhere, never has anything to read."""

    def getpeername(self) -> Any:
        raise OSError("not connected")

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        return len(data)

    def recvfrom(self, size: int) -> Any:
        raise BlockingIOError


class _Transport:
    def __init__(self) -> None:
        self.socket = _Socket()

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        pass

    def stopListening(self) -> None:
        pass


def run(window: int) -> tuple[float, int]:
    """Seconds spent in ``datagramReceived`` for one whole transfer, and the ACK count."""
    done: list[str] = []
    session = TftpSession(FileSource("f", len(DATA), data=DATA), CLIENT, BLKSIZE, window, {},
                          Clock(), lambda s, result: done.append(result))
    session.transport = _Transport()  # type: ignore[assignment]
    session.startProtocol()
    last = len(DATA) // BLKSIZE + 1
    acks = [packet.encode_ack(min(block, last) & 0xFFFF)
            for block in range(window, last + window, window)]
    receive = session.datagramReceived
    started = time.perf_counter()
    for ack in acks:
        receive(ack, CLIENT)
    elapsed = time.perf_counter() - started
    assert done == ["complete"], done
    return elapsed, len(acks)


def main() -> None:
    for window in (1, 16):
        runs = [run(window) for _ in range(7)]
        best, count = min(runs)
        print(f"window {window:2}: {best * 1e3:6.1f} ms for {count} ACKs, "
              f"{best / count * 1e6:5.2f} µs per ACK")


if __name__ == "__main__":
    main()
