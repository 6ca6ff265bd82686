"""Whole files by ``sendfile`` (pxetwist.http.sendfile) over real loopback TCP: the bytes,
keep-alive after them, ranges left to Twisted, and clean-up when the client goes or the
file shrinks."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from pxetwist.http import sendfile
from pxetwist.http.app import _FileOnly

MIB = 1024 * 1024


@pytest.fixture
def served(tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[int, Path, list[sendfile.SendfileProducer]]]:
    """``/f`` served by the app's file resource on a free loopback port, small sendfile
    chunks (so a file takes several), and every SendfileProducer made."""
    monkeypatch.setattr(sendfile, "SENDFILE_CHUNK", 64 * 1024)
    made: list[sendfile.SendfileProducer] = []
    original = sendfile.SendfileProducer.__init__

    def spy(self: sendfile.SendfileProducer, *args: Any) -> None:
        original(self, *args)
        made.append(self)

    monkeypatch.setattr(sendfile.SendfileProducer, "__init__", spy)
    path = tmp_path / "f"
    root = Resource()
    root.putChild(b"f", _FileOnly(str(path), defaultType="application/octet-stream"))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield port.getHost().port, path, made
    port.stopListening()


def get(port: int, headers: str = "", requests: int = 1) -> list[tuple[bytes, bytes]]:
    """``requests`` GETs of ``/f`` on one keep-alive connection (blocking; run in a
    thread): (head, body) of each."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        data = b""
        for _ in range(requests):
            sock.sendall(f"GET /f HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, data = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(data) < length:
                more = sock.recv(MIB)
                assert more, "connection closed early"
                data += more
            answers.append((head, data[:length]))
            data = data[length:]
    return answers


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def eventually(check: Any, seconds: float = 4.0) -> bool:
    """Whether ``check()`` holds within ``seconds``. The client can have every byte
    before the reactor has run the callback of the thread that sent the last chunk
    (both come back through ``callFromThread``, in either order)."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await deferToThread(time.sleep, 0.02)
    return bool(check())


@pytest_twisted.ensureDeferred
async def test_whole_file_twice_on_one_connection(served: Any) -> None:
    """A whole file of many chunks arrives byte for byte, by sendfile, and the connection
    serves the next request after it."""
    port, path, made = served
    content = os.urandom(3 * MIB + 7)
    path.write_bytes(content)
    answers = await deferToThread(get, port, "", 2)
    for head, body in answers:
        assert head.startswith(b"HTTP/1.1 200") and body == content
    assert await eventually(
        lambda: len(made) == 2 and all(p.offset == len(content) for p in made))


@pytest_twisted.ensureDeferred
async def test_body_is_sent_while_the_reactor_is_busy(served: Any, reactor: Any) -> None:
    """Once the headers are out, the sending thread moves the whole body on its own: this
    test reads all of it while holding the reactor thread (no reactor turn in between),
    and the sending thread ends after it."""
    port, path, made = served
    content = os.urandom(12 * MIB + 3)
    path.write_bytes(content)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # many trips
        sock.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setblocking(False)
        data = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data:
            assert time.monotonic() < deadline
            try:
                data += sock.recv(65536)
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
        # from here on the reactor thread is ours until the body is in
        sock.settimeout(10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < len(content):
            more = sock.recv(MIB)
            assert more, "connection closed early"
            body += more
        assert body == content
    assert await eventually(lambda: made and made[0].offset == len(content))
    assert await eventually(lambda: not any(thread.name.startswith("sendfile")
                                            for thread in threading.enumerate()))


@pytest_twisted.ensureDeferred
async def test_empty_file(served: Any) -> None:
    """An empty file is a 200 with no body."""
    port, path, _ = served
    path.write_bytes(b"")
    [(head, body)] = await deferToThread(get, port)
    assert head.startswith(b"HTTP/1.1 200") and body == b""


@pytest_twisted.ensureDeferred
async def test_range_keeps_twisteds_producer(served: Any) -> None:
    """A range is still answered 206 by Twisted's producer, not by sendfile."""
    port, path, made = served
    content = os.urandom(MIB)
    path.write_bytes(content)
    [(head, body)] = await deferToThread(get, port, "Range: bytes=100-199\r\n")
    assert head.startswith(b"HTTP/1.1 206") and body == content[100:200]
    assert made == []


def read_some_then_close(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(65536)


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_file_releases_everything(served: Any, reactor: Any) -> None:
    """A client that leaves mid-file: the file and the duplicated socket are closed."""
    port, path, made = served
    with path.open("wb") as f:
        f.truncate(64 * MIB)
    before = open_fds()
    await deferToThread(read_some_then_close, port)
    # the reactor notices the reset within a few turns
    await eventually(lambda: made and made[0].fileObject.closed and open_fds() <= before)
    assert made and made[0].fileObject.closed and made[0].offset < 64 * MIB
    assert open_fds() <= before


def read_after_shrink(port: int, path: Path) -> int:
    """Read the headers, let the server fill the socket, cut the file to 1 MiB, then
    read to the end: the bytes of body received."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        time.sleep(0.5)
        os.truncate(path, MIB)
        got = len(data.partition(b"\r\n\r\n")[2])
        try:
            while more := sock.recv(MIB):
                got += len(more)
        except ConnectionResetError:  # the server aborts the connection
            pass
        return got


@pytest_twisted.ensureDeferred
async def test_file_shrinking_mid_send_closes_the_connection(served: Any) -> None:
    """A file cut short while being sent ends the connection (the client sees fewer bytes
    than promised) instead of hanging."""
    port, path, made = served
    with path.open("wb") as f:
        f.truncate(256 * MIB)
    got = await deferToThread(read_after_shrink, port, path)
    assert got < 256 * MIB
    assert made and made[0].fileObject.closed
