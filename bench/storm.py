"""Fleet boot storm: N simulated machines power on at once and PXE-boot, pxetwist against
dnsmasq (DHCP + TFTP) + nginx (scripts and files), in one run.

    sudo python bench/storm.py [-n 100 -n 500] [--rounds 3] [--servers pxetwist,dnsmasq]
        [--small] [--workers 1] [--jitter 2] [--deadline 300] [--json FILE] [--keep]

Each machine powers on at a uniformly random moment of the first ``--jitter`` seconds and
does what a BIOS PXE ROM and then iPXE do, from its own MAC, through a relay address
(giaddr), so that one client namespace stands for many hosts:

1. DHCP as the PXE ROM (DISCOVER, OFFER, REQUEST, ACK; options 53, 55, 57, 60
   ``PXEClient:Arch:00000:UNDI:002001``, 61, 93 = 0, 94, 97), resent after 4, 8 and 16 s;
2. TFTP of the boot file the answer names (``blksize 1432 tsize 0``, lock-step), retried
   as iPXE's retry timer does (from 0.25 s, doubled per expiry, given up past 10 s);
3. DHCP again as iPXE (option 77 ``iPXE`` and 175 added);
4. HTTP GET of the script it is handed and of whatever that script chains; then the
   script's ``kernel`` and ``initrd`` (HTTP/1.1, ``Connection: keep-alive``, a new TCP
   connection per file, no retries, as iPXE).

Every machine's source address after DHCP is the address it was leased (the client
namespace treats the whole pool as local), so the servers see one address per machine.
pxetwist runs as the real ``twistd -n pxeboot`` in full mode, every MAC assigned to one
linux entry (``POST /machines``), events and history on (the defaults). dnsmasq answers
DHCP and TFTP (``undionly.kpxe``) and sends iPXE to nginx, where a static ``boot.ipxe``
chains to a static per-MAC script naming the same kernel and initrd with the same
arguments: the same number of requests and the same bytes on both sides.
``dnsmasq-hosts`` is the same stack with one address reserved per MAC
(``--dhcp-hostsfile``): plain dnsmasq NAKs many machines of a large storm ("address in
use"), and its time to the last machine then covers fewer machines than pxetwist's.

Files: kernel 8 MiB and initrd 48 MiB of random bytes (``--small``: 256 KiB and 1 MiB, and
every download's SHA-256 checked); the TFTP file is Debian's ``undionly.kpxe`` for both.
Byte counts are checked against the files for every download, in every mode.

Reported per server and N: time from power-on of the window to the last machine done,
per-machine and per-phase p50/p99, failures, server CPU seconds (utime + stime of every
server process, during the storm), the client workers' CPU seconds (on a machine of two
cores they share with the server, the storm is bound by the sum) and peak RSS (VmHWM
summed). Rounds alternate the
servers (order reversed every other round); tables give medians. Needs root, dnsmasq,
nginx, curl and ``/usr/lib/ipxe/undionly.kpxe``. Everything is bounded: the storm by
``--deadline``, each server's start by 30 s; only PIDs started here are signalled and
the two namespaces (``storm...``) are removed at the end, also on failure. The host's
ARP table limits (``net.ipv4.neigh.default.gc_thresh2/3``, one table for all namespaces)
are raised to fit N machines for the run and put back at the end; so is, for the storms
of a dnsmasq stack, the host's default UDP receive buffer (``net.core.rmem_default``, to
the 4 MiB pxetwist's listeners set on their own sockets).

The client side is this file run with ``--client SPEC`` inside the client namespace (one
asyncio process per ``--workers``, each with its own relay address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dhcp_bench  # bench/ is not a package: its folder on the path
from dhcp_bench import ip

REPO = Path(__file__).resolve().parent.parent
SERVER_IP = "10.78.0.1"
RELAY_BASE = "10.78.0.2"  # worker k relays from RELAY_BASE + k
RELAY_RCVBUF = 8 * 1024 * 1024
POOL = ("10.78.128.1", "10.78.255.254")  # local to the client namespace (AnyIP route)
POOL_NET = "10.78.128.0/17"
NETMASK = "255.255.0.0"
HTTP_PORT = 8080  # pxetwist
NGINX_PORT = 8081
LOADER = Path("/usr/lib/ipxe/undionly.kpxe")
MIB = 1024 * 1024
SIZES = {"kernel": 8 * MIB, "initrd": 48 * MIB}
SMALL_SIZES = {"kernel": 256 * 1024, "initrd": 1 * MIB}
CMDLINE = "console=ttyS0 panic=-1 storm=1"
PHASES = ("dhcp", "tftp", "dhcp_ipxe", "script", "kernel", "initrd")
SERVERS = ("pxetwist", "pxetwist-compare", "dnsmasq", "dnsmasq-hosts")

# --------------------------------------------------------------------------------------
# The client: simulated machines (runs inside the client namespace)
# --------------------------------------------------------------------------------------

DHCP_TIMEOUTS = (4.0, 8.0, 16.0)  # a DHCP message is resent after each, then given up
TFTP_MIN_TIMEOUT = 0.25  # iPXE's retry timer (DEFAULT_MIN_TIMEOUT / MAX_TIMEOUT)
TFTP_MAX_TIMEOUT = 10.0
BLKSIZE = 1432
MAGIC = b"\x63\x82\x53\x63"
PARAMETERS = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                    133, 134, 135, 175, 203])
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6


class BootFailedError(Exception):
    """One machine's boot failed; the message says where."""


def dhcp_request(mac: bytes, xid: int, relay: str, kind: int, ipxe: bool, uuid_: bytes,
                 requested: bytes = b"", server: bytes = b"") -> bytes:
    """A relayed DHCP message as the BIOS PXE ROM (``ipxe`` False) or iPXE sends it
    (LAB-NOTES: the same options, plus 77 ``iPXE`` and 175 for iPXE)."""
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0, bytes(4),
                         bytes(4), bytes(4), socket.inet_aton(relay), mac, b"", b"")
    options = [(53, bytes([kind])), (57, struct.pack("!H", 1472)), (93, b"\0\0"),
               (94, b"\x01\x02\x01"), (60, b"PXEClient:Arch:00000:UNDI:002001"),
               (55, PARAMETERS), (61, b"\x01" + mac), (97, b"\0" + uuid_)]
    if ipxe:
        options += [(77, b"iPXE"), (175, b"\xb1\x05\x01\x10\xec\x81\x00\xeb\x03\x01\x00\x00"
                                         b"\x17\x01\x01\x13\x01\x01")]
    if requested:
        options.append((50, requested))
    if server:
        options.append((54, server))
    body = b"".join(bytes([code, len(value)]) + value for code, value in options)
    return header + MAGIC + body + b"\xff"


def dhcp_reply(data: bytes) -> dict[str, Any] | None:
    """The fields of a DHCP reply the client needs, or ``None`` if it is not one."""
    if len(data) < 240 or data[0] != 2 or data[236:240] != MAGIC:
        return None
    options: dict[int, bytes] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        options[data[i]] = data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    kind = options.get(53, b"\0")[0]
    file = (options.get(67) or data[108:236]).split(b"\0", 1)[0]  # dnsmasq ends 67 in NUL
    tftp = options.get(66, b"").decode("latin-1") or socket.inet_ntoa(data[20:24])
    return {"xid": struct.unpack("!I", data[4:8])[0], "mac": data[28:34], "kind": kind,
            "yiaddr": data[16:20], "server": options.get(54, b""),
            "file": file.decode("latin-1"), "tftp": tftp}


class DhcpRelay:
    """The relay address's port 67: every machine's replies arrive here, handed to the
    waiting machine by xid and MAC.

    The socket is read to the end at each wake-up: it stands for hundreds of machines'
    NICs, and asyncio's datagram transport reads one datagram per loop turn, so with a
    few hundred machines downloading in the same worker a burst of replies waited
    seconds in the buffer (the iPXE-phase DHCP of a 1,000-machine storm took p99 5.5 s
    without one lost packet: OFFER out of the server to REQUEST back up to 5.3 s)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: tuple[str, int]) -> None:
        self.waiting: dict[int, tuple[bytes, asyncio.Future[dict[str, Any]]]] = {}
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.socket.bind(address)
        # one socket for all those machines: a busy worker must not lose their replies
        # to a full buffer (counted as the client's UDP drops)
        try:  # SO_RCVBUFFORCE (33 on Linux; Python names it only on some builds)
            self.socket.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33),
                                   RELAY_RCVBUF)
        except OSError:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_RCVBUF)
        loop.add_reader(self.socket.fileno(), self._readable)

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        with contextlib.suppress(BlockingIOError):  # lost, as on a wire: resent later
            self.socket.sendto(data, address)

    def _readable(self) -> None:
        while True:
            try:
                data = self.socket.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket; read on
            self._received(data)

    def _received(self, data: bytes) -> None:
        reply = dhcp_reply(data)
        if reply is None:
            return
        found = self.waiting.get(reply["xid"])
        if found and found[0] == reply["mac"] and not found[1].done():
            found[1].set_result(reply)


class RetryTimer:
    """iPXE's retry timer: starts at 0.25 s, doubles at each expiry and gives up once it
    would pass 10 s; a reply without a retry moves it towards the round trip time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Any) -> None:
        self._loop = loop
        self._expired = expired
        self.timeout = TFTP_MIN_TIMEOUT
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._retried = False

    def start(self) -> None:
        self._started = self._loop.time()
        self._handle = self._loop.call_later(self.timeout, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            if not self._retried:
                self.timeout += (self._loop.time() - self._started) / 2 - self.timeout / 8
                self.timeout = min(max(self.timeout, TFTP_MIN_TIMEOUT), TFTP_MAX_TIMEOUT)
        self._retried = False

    def _fire(self) -> None:
        self._handle = None
        self._retried = True
        self.timeout *= 2
        self._expired(self.timeout > TFTP_MAX_TIMEOUT)


class TftpDownload(asyncio.DatagramProtocol):
    """One lock-step TFTP read (RFC 1350, options per RFC 2347-2349), as iPXE does it."""

    def __init__(self, server: tuple[str, int], name: str, check: bool) -> None:
        self.server = server
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[tuple[int, str]] = self.loop.create_future()
        self.hasher = hashlib.sha256() if check else None
        self.size = 0
        self.block = 1
        self.blksize = 512
        self.tid: Any = None
        self.last = b""
        self.retries = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.timer = RetryTimer(self.loop, self._expired)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send(struct.pack("!H", 1) + self.name.encode() + b"\0octet\0blksize\0"
                   + str(BLKSIZE).encode() + b"\0tsize\0" + b"0\0", self.server)

    def _send(self, packet: bytes, where: Any) -> None:
        self.last = packet
        assert self.transport is not None
        self.transport.sendto(packet, where)
        self.timer.stop()
        self.timer.start()

    def _expired(self, give_up: bool) -> None:
        if give_up:
            self._finish(BootFailedError(f"tftp: no answer after {self.retries} retries, "
                                    f"block {self.block}"))
            return
        self.retries += 1
        assert self.transport is not None
        self.transport.sendto(self.last, self.tid or self.server)
        self.timer.start()

    def _finish(self, error: Exception | None) -> None:
        self.timer.stop()
        if not self.done.done():
            if error is None:
                self.done.set_result((self.size, self.hasher.hexdigest() if self.hasher
                                      else ""))
            else:
                self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.done.done() or len(data) < 4:
            return
        if self.tid is None:
            self.tid = addr
        elif addr != self.tid:
            return  # another TID's packet; ours goes on
        opcode = (data[0] << 8) | data[1]
        if opcode == 6 and self.block == 1:  # OACK
            fields = data[2:].split(b"\0")
            values = dict(zip(fields[0::2], fields[1::2], strict=False))
            self.blksize = int(values.get(b"blksize", b"512"))
            self._send(struct.pack("!HH", 4, 0), addr)
        elif opcode == 3:
            block = (data[2] << 8) | data[3]
            if block != self.block & 0xFFFF:
                return  # a duplicate: our timer resends the ACK if it was lost
            payload = memoryview(data)[4:]
            self.size += len(payload)
            if self.hasher is not None:
                self.hasher.update(payload)
            self.block += 1
            self._send(struct.pack("!HH", 4, block), addr)
            if len(payload) < self.blksize:
                self._finish(None)
        elif opcode == 5:
            self._finish(BootFailedError(f"tftp: error {data[2:].decode('latin-1', 'replace')!r}"))


#: Each machine's TCP receive buffer (iPXE's own window is of this order). Left to
#: autotuning (up to tcp_rmem's 32 MiB here), 500 connections in one namespace pushed the
#: kernel into TCP memory pressure: pruned queues, retransmissions backing off, and a few
#: initrds stalled for 60-90 s, a cost of the simulation that real machines never pay.
RCVBUF = 256 * 1024


@contextlib.contextmanager
def _sock(local_ip: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((local_ip, 0))
        yield sock
    finally:
        sock.close()


class Client:
    """Every machine of one worker, on one event loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.relay_ip: str = spec["relay"]
        self.check = bool(spec["check_hashes"])
        self.expected: dict[str, tuple[int, str]] = {k: tuple(v)  # type: ignore[misc]
                                                     for k, v in spec["expected"].items()}
        self.buffer = bytearray(1024 * 1024)
        self.loop = asyncio.get_running_loop()
        self.relay: DhcpRelay
        self.lag_max = 0.0

    async def dhcp(self, mac: bytes, uuid_: bytes, ipxe: bool, result: dict[str, Any]
                   ) -> dict[str, Any]:
        """DISCOVER/OFFER then REQUEST/ACK; each message resent after 4, 8, 16 s; after
        a NAK the client starts again with a DISCOVER (RFC 2131 3.1), at most 3 times."""
        for _ in range(3):
            xid = random.getrandbits(32)
            offer = await self._exchange(mac, xid, dhcp_request(
                mac, xid, self.relay_ip, DISCOVER, ipxe, uuid_), (OFFER,), result)
            ack = await self._exchange(mac, xid, dhcp_request(
                mac, xid, self.relay_ip, REQUEST, ipxe, uuid_, offer["yiaddr"],
                offer["server"]), (ACK, NAK), result)
            if ack["kind"] == ACK:
                return ack
            result["retries"]["dhcp"] += 1
        raise BootFailedError("dhcp: NAK three times")

    async def _exchange(self, mac: bytes, xid: int, packet: bytes, kinds: tuple[int, ...],
                        result: dict[str, Any]) -> dict[str, Any]:
        """Send ``packet`` until a reply of one of ``kinds`` comes; others (a late OFFER
        of a resent DISCOVER) are ignored, as a client does."""
        try:
            for tries, timeout in enumerate(DHCP_TIMEOUTS):
                self.relay.sendto(packet, (self.spec["server"], 67))
                result["retries"]["dhcp"] += 1 if tries else 0
                until = self.loop.time() + timeout
                while (left := until - self.loop.time()) > 0:
                    future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
                    self.relay.waiting[xid] = (mac, future)
                    try:
                        reply = await asyncio.wait_for(future, left)
                    except TimeoutError:
                        break
                    if reply["kind"] in kinds:
                        return reply
        finally:
            self.relay.waiting.pop(xid, None)
        raise BootFailedError(f"dhcp: no answer to message type {packet[242]} after "
                         f"{len(DHCP_TIMEOUTS)} tries")

    async def tftp(self, ip: str, server: str, name: str, result: dict[str, Any]) -> None:
        download = TftpDownload((server, 69), name, self.check)
        transport, _ = await self.loop.create_datagram_endpoint(lambda: download,
                                                                local_addr=(ip, 0))
        try:
            size, digest = await download.done
        finally:
            transport.close()
            result["retries"]["tftp"] += download.retries
        self._verify("loader", size, digest)
        result["bytes"]["tftp"] += size

    def _verify(self, kind: str, size: int, digest: str) -> None:
        want_size, want_hash = self.expected[kind]
        if size != want_size:
            raise BootFailedError(f"{kind}: {size} bytes, not {want_size}")
        if self.check and digest != want_hash:
            raise BootFailedError(f"{kind}: SHA-256 {digest[:12]}..., not {want_hash[:12]}...")

    async def http_get(self, ip: str, url: str, keep: bool) -> tuple[int, bytes, str]:
        """GET ``url`` as iPXE: HTTP/1.1, keep-alive asked, a new connection; returns
        (body length, body if ``keep``, SHA-256 if checking)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BootFailedError(f"http: cannot fetch {url!r}")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path or '/'} HTTP/1.1\r\nConnection: keep-alive\r\n"
                   f"User-Agent: iPXE/1.0.0+git-20190125\r\nHost: {parts.netloc}\r\n\r\n"
                   ).encode()
        try:
            return await self._get(ip, url, parts.hostname, parts.port or 80, request, keep)
        except OSError as e:
            raise BootFailedError(f"http: {url}: {type(e).__name__}: {e}") from None

    async def _get(self, ip: str, url: str, host: str, port: int, request: bytes,
                   keep: bool) -> tuple[int, bytes, str]:
        with _sock(ip) as sock:
            await self.loop.sock_connect(sock, (host, port))
            await self.loop.sock_sendall(sock, request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await self.loop.sock_recv(sock, 65536)
                if not chunk:
                    raise BootFailedError(f"http: {url}: connection closed before the headers")
                head += chunk
                if len(head) > 65536:
                    raise BootFailedError(f"http: {url}: headers too long")
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(" ", 2)
            if len(status) < 2 or status[1] != "200":
                raise BootFailedError(f"http: {url}: {lines[0]!r}")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                if not keep:
                    raise BootFailedError(f"http: {url}: chunked file")
                body = await self._chunked(sock, rest, url)
                return len(body), body, hashlib.sha256(body).hexdigest()
            if "content-length" not in headers:
                raise BootFailedError(f"http: {url}: no Content-Length")
            length = int(headers["content-length"])
            hasher = hashlib.sha256() if self.check or keep else None
            kept = bytearray(rest) if keep else None
            if hasher is not None:
                hasher.update(rest)
            got = len(rest)
            # Bytes only counted are received into one buffer all downloads share; bytes
            # hashed or kept need their own (another download's receive may run between
            # this one's and our reading it).
            view = memoryview(self.buffer if hasher is None else bytearray(256 * 1024))
            while got < length:
                n = await self.loop.sock_recv_into(sock, view[:min(len(view), length - got)])
                if n == 0:
                    raise BootFailedError(f"http: {url}: closed after {got} of {length} bytes")
                got += n
                if hasher is not None:
                    hasher.update(view[:n])
                if kept is not None:
                    kept += view[:n]
                # The others' turn: asyncio's sock_recv_into returns without yielding
                # while the socket has data, and a server that keeps it full (sendfile
                # on another core) then held the whole worker for one body, leaving its
                # other machines' DHCP replies and TFTP blocks unread for seconds.
                await asyncio.sleep(0)
            return got, bytes(kept or b""), hasher.hexdigest() if hasher else ""

    async def _chunked(self, sock: socket.socket, data: bytes, url: str) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in data:
                more = await self.loop.sock_recv(sock, 65536)
                if not more:
                    raise BootFailedError(f"http: {url}: chunked body cut")
                data += more
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                more = await self.loop.sock_recv(sock, 65536)
                if not more:
                    raise BootFailedError(f"http: {url}: chunked body cut")
                data += more
            if size == 0:
                return body
            body, data = body + data[:size], data[size + 2:]

    async def script(self, ip: str, url: str, mac: str, result: dict[str, Any],
                     depth: int = 0) -> None:
        """Fetch and carry out an iPXE script: ``chain`` (recursively), ``kernel``,
        ``initrd``, ``boot``; other commands change nothing here."""
        if depth > 4:
            raise BootFailedError("script: chained more than 4 deep")
        started = self.loop.time()
        size, body, _ = await self.http_get(ip, url, keep=True)
        result["phases"]["script"] += self.loop.time() - started
        result["bytes"]["script"] += size
        if not body.startswith(b"#!ipxe"):
            raise BootFailedError(f"script: {url} is not an iPXE script")
        settings = {"mac": mac, "mac:hexhyp": mac.replace(":", "-"), "buildarch": "i386",
                    "platform": "pcbios"}
        for raw in body.decode("utf-8", "replace").splitlines():
            line = re.sub(r"\$\{([^}]+)\}", lambda m: settings.get(m.group(1), ""), raw)
            words = re.split(r"\s+(?:&&|\|\|)(?:\s|$)", line.strip(), maxsplit=1)[0].split()
            if not words:
                continue
            command, args = words[0], [w for w in words[1:] if not w.startswith("-")]
            if command == "initrd" and "--name" in words:  # --name NAME: skip NAME
                args = [w for w in args if w != words[words.index("--name") + 1]]
            if command == "chain":
                await self.script(ip, args[0], mac, result, depth + 1)
                return
            if command in ("kernel", "initrd"):
                started = self.loop.time()
                size, _, digest = await self.http_get(ip, args[0], keep=False)
                result["phases"][command] += self.loop.time() - started
                result["bytes"][command] += size
                self._verify(command, size, digest)
            elif command == "boot":
                if not result["bytes"]["kernel"] or not result["bytes"]["initrd"]:
                    raise BootFailedError("script: boot without kernel and initrd")
                return
            elif command == "exit":
                raise BootFailedError("script: exit (local boot) instead of the entry")
        raise BootFailedError(f"script: {url} ended without boot or chain")

    async def boot(self, index: int, mac_text: str, start_at: float,
                   result: dict[str, Any]) -> None:
        """One machine, from power-on to the initrd's last byte."""
        await asyncio.sleep(max(0.0, start_at - self.loop.time()))
        result["start"] = self.loop.time() - self.t0
        mac = bytes.fromhex(mac_text.replace(":", ""))
        uuid_ = uuid.UUID(int=index + 1).bytes_le  # first fields little-endian, as PXE
        phase = "dhcp"
        mark = self.loop.time()

        def done_phase(name: str) -> None:
            nonlocal phase, mark
            now = self.loop.time()
            result["phases"][name] = now - mark
            phase, mark = name, now

        try:
            ack = await self.dhcp(mac, uuid_, False, result)
            done_phase("dhcp")
            ip = socket.inet_ntoa(ack["yiaddr"])
            if not ack["file"] or "://" in ack["file"]:
                raise BootFailedError(f"dhcp: PXE ROM sent {ack['file']!r}, not a TFTP file")
            phase = "tftp"
            await self.tftp(ip, ack["tftp"], ack["file"], result)
            done_phase("tftp")
            phase = "dhcp_ipxe"
            ack = await self.dhcp(mac, uuid_, True, result)
            done_phase("dhcp_ipxe")
            ip = socket.inet_ntoa(ack["yiaddr"])
            phase = "http"
            await self.script(ip, ack["file"], mac_text, result)
            result["done"] = self.loop.time() - self.t0
        except BootFailedError as e:
            result["error"] = str(e)
        except (OSError, ValueError, IndexError) as e:
            result["error"] = f"{phase}: {type(e).__name__}: {e}"

    async def _watch_lag(self) -> None:
        """The worker's own delay: how late a 10 ms sleep wakes, at worst. A late loop
        reads every machine's replies late, whatever the server does."""
        while True:
            asked = self.loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.lag_max = max(self.lag_max, self.loop.time() - asked)

    async def run(self) -> list[dict[str, Any]]:
        spec = self.spec
        self.relay = DhcpRelay(self.loop, (self.relay_ip, 67))
        self.t0 = self.loop.time() + (spec["start_wall"] - time.time())
        rng = random.Random(spec["seed"])
        results = []
        tasks = []
        for index, mac in spec["machines"]:
            result: dict[str, Any] = {
                "mac": mac, "error": None, "done": None, "start": None,
                "phases": dict.fromkeys(PHASES, 0.0),
                "bytes": {"tftp": 0, "script": 0, "kernel": 0, "initrd": 0},
                "retries": {"dhcp": 0, "tftp": 0}}
            results.append(result)
            start_at = self.t0 + rng.uniform(0, spec["jitter"])
            tasks.append(asyncio.ensure_future(self.boot(index, mac, start_at, result)))
        watch = asyncio.ensure_future(self._watch_lag())
        _, late = await asyncio.wait(tasks, timeout=max(
            1.0, self.t0 + spec["deadline"] - self.loop.time()))
        watch.cancel()
        for task in late:
            task.cancel()
        for result in results:
            if result["done"] is None and result["error"] is None:
                result["error"] = "deadline"
        return results


def client_main(spec_path: str) -> None:
    """``--client SPEC``: run the machines of one worker, print their results and the
    worker's own CPU seconds as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    results, lag = asyncio.run(_client(spec))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    json.dump({"machines": results, "cpu": usage.ru_utime + usage.ru_stime, "lag": lag},
              sys.stdout)


async def _client(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    client = Client(spec)
    results = await client.run()
    return results, client.lag_max


# --------------------------------------------------------------------------------------
# The driver: namespaces, servers, rounds, tables (runs as root on the host)
# --------------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"# {time.strftime('%H:%M:%S', time.gmtime())} {text}", file=sys.stderr, flush=True)


NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


@contextlib.contextmanager
def neighbour_room(machines: int) -> Iterator[None]:
    """Room in the kernel's ARP table for every machine, for the storm's length.

    The table is one for the whole host (its ``gc_thresh*`` exist only in the first
    namespace), 1,024 entries at most by default: the server namespace needs one per
    machine address, and past the limit the kernel drops the first packet to each new
    address ("neighbor table overflow"). At N=1,000 that failed ~300 machines per storm
    on their first TFTP block, with either server (bench/RESULTS.md). A server on a LAN
    of that many machines needs the same. The old values are put back on the way out."""
    want = {"gc_thresh2": 2 * machines + 1024,
            "gc_thresh3": 4 * machines + 2048}
    old = {name: int((NEIGH / name).read_text()) for name in want}
    try:
        for name, value in want.items():
            if value > old[name]:
                (NEIGH / name).write_text(str(value))
        yield
    finally:
        for name, value in old.items():
            (NEIGH / name).write_text(str(value))


#: what pxetwist's DHCP and TFTP listeners get (they ask for 2 MiB; the kernel doubles it)
STACK_RCVBUF = 4 * MIB
RMEM_DEFAULT = Path("/proc/sys/net/core/rmem_default")


@contextlib.contextmanager
def stack_receive_buffers(kind: str) -> Iterator[None]:
    """For a dnsmasq stack: the host's default UDP receive buffer raised to what
    pxetwist's listeners set on their own sockets, for that storm only.

    dnsmasq has no option for it, and with the default (208 KiB) its DHCP socket
    overflows at N=1,000 (796 datagrams dropped, 22 machines failed in one storm), which
    is no comparison of the servers. The setting is the first namespace's (the others
    refuse to change it), so it is the whole host's while it lasts; the old value is put
    back on the way out."""
    if not kind.startswith("dnsmasq"):
        yield
        return
    old = RMEM_DEFAULT.read_text().strip()
    try:
        RMEM_DEFAULT.write_text(str(STACK_RCVBUF))
        yield
    finally:
        RMEM_DEFAULT.write_text(old)


@contextlib.contextmanager
def namespaces(workers: int) -> Iterator[tuple[str, str]]:
    """A server and a client namespace joined by a veth (``stormv0``/``stormv1``); the
    client side holds one relay address per worker and a local route for the pool, so a
    machine can send from the address it was leased. What still runs in them is killed
    and both are removed on the way out, also on failure."""
    tag = uuid.uuid4().hex[:6]
    server, client = f"storms{tag}", f"stormc{tag}"
    with dhcp_bench.network_namespaces(server, client):
        ip("-n", server, "link", "add", "stormv0", "type", "veth", "peer", "name", "stormv1")
        ip("-n", server, "link", "set", "stormv1", "netns", client)
        ip("-n", server, "addr", "add", f"{SERVER_IP}/16", "dev", "stormv0")
        ip("-n", server, "link", "set", "stormv0", "up")
        for k in range(workers):
            ip("-n", client, "addr", "add", f"{IPv4Address(RELAY_BASE) + k}/16", "dev",
               "stormv1")
        ip("-n", client, "link", "set", "stormv1", "up")
        ip("-n", client, "route", "add", "local", POOL_NET, "dev", "lo")
        yield server, client


def mac_of(index: int) -> str:
    return f"52:54:01:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def write_files(root: Path, sizes: dict[str, int], count: int) -> dict[str, tuple[int, str]]:
    """The shared payload: the entry's kernel and initrd (random bytes) in pxetwist's
    catalog, hard-linked into nginx's folder with its static scripts; the expected
    (size, SHA-256) of everything a machine downloads."""
    entry = root / "catalog" / "storm"
    www = root / "www"
    for folder in (entry, www / "machines", root / "tftproot"):
        folder.mkdir(parents=True, exist_ok=True)
    names = {"kernel": "vmlinuz", "initrd": "initrd.img"}
    for kind, name in names.items():
        with (entry / name).open("wb") as f:
            left = sizes[kind]
            while left:
                f.write(os.urandom(min(left, 4 * MIB)))
                left -= min(left, 4 * MIB)
        os.link(entry / name, www / name)
    (entry / "entry.ini").write_text(
        "[entry]\nname = Storm payload\nkind = linux\nkernel = vmlinuz\n"
        f"initrd = initrd.img\ncmdline = {CMDLINE}\n")
    (www / "boot.ipxe").write_text(
        f"#!ipxe\nchain http://{SERVER_IP}:{NGINX_PORT}/machines/${{mac:hexhyp}}.ipxe\n")
    script = (f"#!ipxe\nkernel http://{SERVER_IP}:{NGINX_PORT}/vmlinuz initrd=initrd.img "
              f"{CMDLINE}\ninitrd --name initrd.img http://{SERVER_IP}:{NGINX_PORT}/"
              "initrd.img\nboot\n")
    for index in range(count):
        (www / "machines" / f"{mac_of(index).replace(':', '-')}.ipxe").write_text(script)
    shutil.copy(LOADER, root / "undionly.kpxe")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    root.chmod(0o755)  # nginx's workers read as an unprivileged user
    expected = {kind: ((entry / name).stat().st_size, sha256_of(entry / name))
                for kind, name in names.items()}
    expected["loader"] = (LOADER.stat().st_size, sha256_of(LOADER))
    return expected


NGINX_CONF = """daemon off; pid {run}/nginx.pid; error_log {run}/nginx-error.log;
worker_processes auto; worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_timeout 65;
  types {{ }} default_type application/octet-stream;
  client_body_temp_path {run}/tmp; proxy_temp_path {run}/tmp; fastcgi_temp_path {run}/tmp;
  uwsgi_temp_path {run}/tmp; scgi_temp_path {run}/tmp;
  server {{ listen {ip}:{port} backlog=4096; root {root}/www; }} }}
"""


def pxetwist_config(run: Path, root: Path) -> Path:
    config = run / "pxe.ini"
    config.write_text(
        f"[server]\naddress = {SERVER_IP}\ninterface = stormv0\nstate = state.sqlite\n"
        f"[dhcp]\nmode = full\nrange_start = {POOL[0]}\nrange_end = {POOL[1]}\n"
        f"netmask = {NETMASK}\nlease_time = 3600\n"
        f"[tftp]\nroot = {root / 'tftproot'}\nmax_sessions = 10000\n"
        f"[http]\nport = {HTTP_PORT}\n"
        f"[catalog]\npaths = {root / 'catalog'}\nrescan_interval = 0\n"
        "[boot]\nunknown = local\n")
    return config


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def wait_until(check: Any, what: str, processes: list[subprocess.Popen[bytes]],
               log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-1500:]}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in 30 s")


def curl_ok(ns: str, url: str) -> bool:
    return subprocess.run(in_ns(ns, "curl", "-sf", "-o", "/dev/null", "--max-time", "1", url),
                          capture_output=True, timeout=10).returncode == 0


#: ``--compare TREE``: the source tree the ``pxetwist-compare`` server runs from.
COMPARE_TREE: list[Path] = []


def start_servers(kind: str, ns: str, run: Path, root: Path, count: int
                  ) -> list[subprocess.Popen[bytes]]:
    """Start one stack in ``ns`` (fresh state in ``run``); return once it answers, with
    every MAC assigned (pxetwist)."""
    log = run / "server.log"
    out = log.open("ab")
    started: list[subprocess.Popen[bytes]] = []
    try:
        if kind.startswith("pxetwist"):
            tree = COMPARE_TREE[0] if kind == "pxetwist-compare" else REPO
            env = dict(os.environ, PYTHONPATH=str(tree))
            started.append(subprocess.Popen(in_ns(
                ns, sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "pxeboot", "--config", str(pxetwist_config(run, root))),
                cwd=run, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL))
            base = f"http://127.0.0.1:{HTTP_PORT}"
            wait_until(lambda: curl_ok(ns, f"{base}/health"), kind, started, log)
            body = json.dumps([{"mac": mac_of(i), "entry": "storm", "once": False}
                               for i in range(count)])
            (run / "assign.json").write_text(body)
            answer = subprocess.run(in_ns(
                ns, "curl", "-sS", "--max-time", "60", "-X", "POST", "-H",
                "Content-Type: application/json", "--data-binary", f"@{run / 'assign.json'}",
                "-w", "%{http_code}", "-o", str(run / "assign.out"), f"{base}/machines"),
                capture_output=True, text=True, timeout=90)
            if answer.stdout.strip() != "200":
                raise RuntimeError(f"POST /machines: {answer.stdout} "
                                   f"{(run / 'assign.out').read_text()[:500]}")
        elif kind in ("dnsmasq", "dnsmasq-hosts"):
            (run / "tmp").mkdir()
            (run / "nginx.conf").write_text(NGINX_CONF.format(run=run, root=root, ip=SERVER_IP,
                                                              port=NGINX_PORT))
            started.append(subprocess.Popen(in_ns(
                ns, "nginx", "-c", str(run / "nginx.conf"), "-p", str(run)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            started.append(subprocess.Popen(in_ns(
                ns, "dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
                "--pid-file=", f"--log-facility={run / 'dnsmasq.log'}", "--no-ping",
                f"--dhcp-range={POOL[0]},{POOL[1]},{NETMASK},1h",
                f"--dhcp-leasefile={run / 'leases'}", "--interface=stormv0",
                "--bind-interfaces", "--dhcp-lease-max=100000", "--enable-tftp",
                f"--tftp-root={root}", "--tftp-max=10000", "--dhcp-userclass=set:ipxe,iPXE",
                "--dhcp-boot=tag:!ipxe,undionly.kpxe",
                f"--dhcp-boot=tag:ipxe,http://{SERVER_IP}:{NGINX_PORT}/boot.ipxe",
                "--dhcp-option-force=tag:ipxe,60,PXEClient", *reservations(kind, run, count)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            dnsmasq_log = run / "dnsmasq.log"
            wait_until(lambda: curl_ok(ns, f"http://{SERVER_IP}:{NGINX_PORT}/boot.ipxe")
                       and dnsmasq_log.exists() and "started" in dnsmasq_log.read_text(
                           errors="replace"), kind, started, log)
        else:
            raise ValueError(kind)
    except BaseException:
        stop_all(started)
        raise
    return started


def reservations(kind: str, run: Path, count: int) -> list[str]:
    """``dnsmasq-hosts``: one address reserved per MAC (``--dhcp-hostsfile``), as an
    operator of a known fleet configures dnsmasq. Plain ``dnsmasq`` hands out dynamic
    addresses and, keeping no state for its offers, offers concurrent machines the same
    free address and NAKs all but one of them at the REQUEST ("address in use"): a third
    to a half of a storm of 500-1,000 fails there, and its time to the last machine then
    counts fewer machines than pxetwist's."""
    if kind != "dnsmasq-hosts":
        return []
    hosts = run / "hosts"
    first = IPv4Address(POOL[0])
    hosts.write_text("".join(f"{mac_of(i)},{first + i}\n" for i in range(count)))
    return [f"--dhcp-hostsfile={hosts}"]


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM our servers by PID (``ip netns exec`` execs them), then reap them."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def family(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    """Our server PIDs and their children (nginx's workers)."""
    pids = [p.pid for p in processes if p.poll() is None]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) in pids and int(entry.name) not in pids:
                    pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each PID, seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_parts(pids: list[int]) -> dict[str, float]:
    """Server CPU seconds (utime + stime) by part: per program (``nginx``, ``dnsmasq``),
    and for pxetwist its reactor (main) thread apart from its other threads (the sending
    threads' ``sendfile``, the SQL thread), which tells Python's share from the kernel's
    copying. A thread that has ended counts in its process's total, so "other threads"
    is the process's total less the main thread's."""
    ticks = os.sysconf("SC_CLK_TCK")

    def seconds(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    parts: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            total = seconds(Path(f"/proc/{pid}/stat"))
            if name.startswith("python"):
                main = seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
                parts["reactor thread"] = parts.get("reactor thread", 0.0) + main
                parts["other threads"] = parts.get("other threads", 0.0) + total - main
            else:
                parts[name] = parts.get(name, 0.0) + total
    return parts


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def drops(ns: str) -> tuple[int, int]:
    """Namespace ``ns``'s counts of TCP handshakes a full accept queue dropped (TcpExt
    ListenDrops: the client retries after 1, 3, 7... s) and of datagrams a full UDP
    receive buffer dropped (Udp RcvbufErrors: DHCP and TFTP requests lost)."""
    found = {}
    for table in ("/proc/net/netstat", "/proc/net/snmp"):
        text = subprocess.run(in_ns(ns, "cat", table), capture_output=True, text=True,
                              timeout=10).stdout.splitlines()
        for names, values in zip(text[0::2], text[1::2], strict=False):
            kind = names.split(":")[0]
            found.update({f"{kind}.{k}": int(v) for k, v in zip(
                names.split()[1:], values.split()[1:], strict=False) if v.lstrip("-").isdigit()})
    return found.get("TcpExt.ListenDrops", 0), found.get("Udp.RcvbufErrors", 0)


def storm(kind: str, server_ns: str, client_ns: str, root: Path, count: int,
          expected: dict[str, tuple[int, str]], args: argparse.Namespace, seed: int
          ) -> dict[str, Any]:
    """One storm of ``count`` machines against one stack, from a fresh state."""
    run = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root / "runs"))
    run.chmod(0o755)
    with stack_receive_buffers(kind):
        return _storm(kind, server_ns, client_ns, run, root, count, expected, args, seed)


def _storm(kind: str, server_ns: str, client_ns: str, run: Path, root: Path, count: int,
           expected: dict[str, tuple[int, str]], args: argparse.Namespace, seed: int
           ) -> dict[str, Any]:
    processes = start_servers(kind, server_ns, run, root, count)
    profiler = None
    try:
        pids = family(processes)
        if args.profile and kind.startswith("pxetwist"):
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                # --nonblocking: the blocking default stopped the server at each sample
                # and made a 16 s storm last 136 s
                ["py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw",
                 "-p", str(processes[0].pid),
                 "-o", str(args.profile / f"{kind}-n{count}-{seed}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        before = cpu_seconds(pids)
        parts_before = cpu_parts(pids)
        dropped = drops(server_ns)
        client_dropped = drops(client_ns)
        load_before = Path("/proc/loadavg").read_text().split()[0]
        start_wall = time.time() + 1.0 + 0.2 * args.workers  # the workers' common t0
        workers = []
        for k in range(args.workers):
            spec = {"server": SERVER_IP, "relay": str(IPv4Address(RELAY_BASE) + k),
                    "machines": [(i, mac_of(i)) for i in range(k, count, args.workers)],
                    "jitter": args.jitter, "deadline": args.deadline,
                    "start_wall": start_wall, "seed": seed * 1000 + k,
                    "check_hashes": args.small, "expected": expected}
            path = run / f"spec{k}.json"
            path.write_text(json.dumps(spec))
            workers.append(subprocess.Popen(
                in_ns(client_ns, sys.executable, str(Path(__file__).resolve()), "--client",
                      str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        machines: list[dict[str, Any]] = []
        client_cpu = 0.0
        client_lag = 0.0
        for worker in workers:
            out, err = worker.communicate(timeout=args.deadline + 120)
            if worker.returncode != 0:
                raise RuntimeError(f"client worker failed: {err.decode()[-2000:]}")
            report = json.loads(out)
            machines += report["machines"]
            client_cpu += report["cpu"]
            client_lag = max(client_lag, report["lag"])
        after = cpu_seconds(pids)
        parts_after = cpu_parts(pids)
        dropped_after = drops(server_ns)
        client_dropped_after = drops(client_ns)
        rss = peak_rss_mib(pids)
        load_after = Path("/proc/loadavg").read_text().split()[0]
        if args.keep and kind.startswith("pxetwist"):  # its counters, to read afterwards
            subprocess.run(in_ns(server_ns, "curl", "-sf", "--max-time", "10", "-o",
                                 str(run / "metrics.txt"),
                                 f"http://127.0.0.1:{HTTP_PORT}/metrics"),
                           capture_output=True, timeout=30)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(timeout=60)
        stop_all(processes)
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    return {"server": kind, "n": count, "machines": machines,
            "cpu": sum(after.get(p, 0.0) - before.get(p, 0.0) for p in after),
            "client_cpu": client_cpu, "client_lag": client_lag, "rss": rss,
            "cpu_parts": {k: v - parts_before.get(k, 0.0) for k, v in parts_after.items()},
            "load": f"{load_before}-{load_after}",
            "listen_drops": dropped_after[0] - dropped[0],
            "udp_drops": dropped_after[1] - dropped[1],
            "client_udp_drops": client_dropped_after[1] - client_dropped[1]}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one storm."""
    machines = result["machines"]
    good = [m for m in machines if m["error"] is None]
    totals = [m["done"] - m["start"] for m in good]
    out: dict[str, Any] = {
        "server": result["server"], "n": result["n"], "failures": len(machines) - len(good),
        "machines": len(machines),
        "completed": sum(1 for m in good if all(m["phases"][p] > 0 for p in PHASES)),
        "errors": sorted({m["error"] for m in machines if m["error"]})[:5],
        "last": max((m["done"] for m in good), default=float("nan")),
        "p50": percentile(totals, 0.5), "p99": percentile(totals, 0.99),
        "cpu": result["cpu"], "client_cpu": result["client_cpu"], "rss": result["rss"],
        "cpu_parts": result["cpu_parts"], "client_lag": result["client_lag"],
        "load": result["load"],
        "listen_drops": result["listen_drops"], "udp_drops": result["udp_drops"],
        "client_udp_drops": result["client_udp_drops"],
        "retries": {k: sum(m["retries"][k] for m in machines) for k in ("dhcp", "tftp")},
        "slowest": sorted(good, key=lambda m: m["done"] - m["start"])[-3:],
        "bytes": {k: sorted({m["bytes"][k] for m in good}) for k in
                  ("tftp", "script", "kernel", "initrd")},
        "phases": {p: (percentile([m["phases"][p] for m in good], 0.5),
                       percentile([m["phases"][p] for m in good], 0.99)) for p in PHASES},
    }
    return out


def med(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return statistics.median(good) if good else float("nan")


def table(summaries: list[dict[str, Any]], servers: list[str], counts: list[int]) -> str:
    lines = ["| N | server | time to last machine (s) per round | median | per machine "
             "p50 / p99 (s) | failures | server CPU (s) | client CPU (s) | peak RSS (MiB) | "
             "retries DHCP/TFTP | TCP listen / UDP buffer drops | client UDP buffer drops | "
             "load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for count in counts:
        medians = {}
        for kind in servers:
            runs = [s for s in summaries if s["server"] == kind and s["n"] == count]
            if not runs:
                continue
            medians[kind] = med([r["last"] for r in runs])
            lasts = ", ".join(format(r["last"], ".2f") for r in runs)
            lines.append(
                f"| {count} | {kind} | {lasts} | "
                f"**{medians[kind]:.2f}** | {med([r['p50'] for r in runs]):.2f} / "
                f"{med([r['p99'] for r in runs]):.2f} | "
                f"{'/'.join(str(r['failures']) for r in runs)} | "
                f"{med([r['cpu'] for r in runs]):.1f} | "
                f"{med([r['client_cpu'] for r in runs]):.1f} | {max(r['rss'] for r in runs):.0f} | "
                f"{sum(r['retries']['dhcp'] for r in runs)}/"
                f"{sum(r['retries']['tftp'] for r in runs)} | "
                f"{'/'.join(str(r['listen_drops']) for r in runs)} / "
                f"{'/'.join(str(r['udp_drops']) for r in runs)} | "
                f"{'/'.join(str(r['client_udp_drops']) for r in runs)} | "
                f"{', '.join(r['load'] for r in runs)} |")
        for name in ("pxetwist", "pxetwist-compare"):
            for stack in ("dnsmasq", "dnsmasq-hosts"):
                if name in medians and stack in medians:
                    lines.append(f"| {count} | ratio {name}/{stack}+nginx | | "
                                 f"**{medians[name] / medians[stack]:.2f}** | | | | | | | | | |")
    lines += ["", "Per phase, p50 / p99 seconds (medians over rounds):", "",
              "| N | server | " + " | ".join(PHASES) + " |",
              "|---|---|" + "---|" * len(PHASES)]
    for count in counts:
        for kind in servers:
            runs = [s for s in summaries if s["server"] == kind and s["n"] == count]
            if runs:
                cells = [f"{med([r['phases'][p][0] for r in runs]):.3f} / "
                         f"{med([r['phases'][p][1] for r in runs]):.3f}" for p in PHASES]
                lines.append(f"| {count} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", "Server CPU seconds by part (medians over rounds), and per machine booted:",
              "", "| N | server | parts | per machine booted (ms) |", "|---|---|---|---|"]
    for count in counts:
        for kind in servers:
            runs = [s for s in summaries if s["server"] == kind and s["n"] == count]
            if runs:
                names = sorted({k for r in runs for k in r["cpu_parts"]})
                parts = ", ".join(f"{k} {med([r['cpu_parts'].get(k, 0.0) for r in runs]):.2f}"
                                  for k in names)
                booted = med([r["machines"] - r["failures"] for r in runs])
                lines.append(f"| {count} | {kind} | {parts} | "
                             f"{1000 * med([r['cpu'] for r in runs]) / max(booted, 1):.1f} |")
    lines += ["", "Bytes per machine (distinct values seen, successful machines):", "",
              "| N | server | TFTP | scripts | kernel | initrd |", "|---|---|---|---|---|---|"]
    for count in counts:
        for kind in servers:
            runs = [s for s in summaries if s["server"] == kind and s["n"] == count]
            if runs:
                seen = {k: sorted({v for r in runs for v in r["bytes"][k]})
                        for k in ("tftp", "script", "kernel", "initrd")}
                lines.append(f"| {count} | {kind} | " + " | ".join(
                    ", ".join(map(str, v)) for v in seen.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, action="append", dest="counts",
                        help="machines per storm, repeatable (default 100; max 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="max 10")
    parser.add_argument("--servers", default="pxetwist,dnsmasq",
                        help=f"comma-separated, of {', '.join(SERVERS)}")
    parser.add_argument("--small", action="store_true",
                        help="256 KiB kernel, 1 MiB initrd, SHA-256 of every download checked")
    parser.add_argument("--workers", type=int, default=1,
                        help="client processes, each with its own relay address (max 8)")
    parser.add_argument("--jitter", type=float, default=2.0, help="power-on window, seconds")
    parser.add_argument("--deadline", type=float, default=300.0,
                        help="seconds after the window opens when unfinished machines fail "
                             "(max 1800)")
    parser.add_argument("--json", type=Path, help="write every storm's figures here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (and pxetwist's /metrics of each storm)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy (raw, 200 Hz) each pxetwist storm into DIR")
    parser.add_argument("--compare", type=Path, metavar="TREE",
                        help="also run pxetwist from this source tree (e.g. a `git archive` "
                             "of an older commit) as 'pxetwist-compare', in the same rounds")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    counts = [min(max(n, 1), 5000) for n in (args.counts or [100])]
    args.rounds = min(max(args.rounds, 1), 10)
    args.workers = min(max(args.workers, 1), 8)
    args.deadline = min(max(args.deadline, 5.0), 1800.0)
    servers = args.servers.split(",")
    if args.compare:
        COMPARE_TREE.append(args.compare.resolve())
        servers.insert(1, "pxetwist-compare")
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, DHCP ports)")
    unknown = set(servers) - set(SERVERS)
    if unknown:
        sys.exit(f"unknown server(s): {', '.join(sorted(unknown))}")
    stacks = {"dnsmasq", "dnsmasq-hosts"} & set(servers)
    needed = ["curl"] + (["dnsmasq", "nginx"] if stacks else [])
    missing = [p for p in needed if shutil.which(p) is None]
    if missing or not LOADER.is_file():
        sys.exit(f"missing: {', '.join(missing) or LOADER}")
    root = Path(tempfile.mkdtemp(prefix="pxetwist-storm-"))
    (root / "runs").mkdir()
    progress(f"files in {root}")
    expected = write_files(root, SMALL_SIZES if args.small else SIZES, max(counts))
    summaries: list[dict[str, Any]] = []
    try:
        with neighbour_room(max(counts)), namespaces(args.workers) as (server_ns, client_ns):
            for round_number in range(args.rounds):
                for count in counts:
                    order = servers if round_number % 2 == 0 else servers[::-1]
                    for kind in order:
                        result = storm(kind, server_ns, client_ns, root, count, expected,
                                       args, seed=round_number)
                        figures = summary(result)
                        summaries.append(figures)
                        progress(f"round {round_number + 1} N={count} {kind}: last "
                                 f"{figures['last']:.2f} s, p50 {figures['p50']:.2f} s, "
                                 f"failures {figures['failures']} {figures['errors']}, "
                                 f"CPU {figures['cpu']:.1f} s (client "
                                 f"{figures['client_cpu']:.1f} s, loop late by "
                                 f"{figures['client_lag']:.2f} s at worst), "
                                 f"RSS {figures['rss']:.0f} MiB, "
                                 f"listen drops {figures['listen_drops']}, "
                                 f"UDP drops {figures['udp_drops']} "
                                 f"(client {figures['client_udp_drops']}), "
                                 f"load {figures['load']}")
    finally:
        if args.json:
            args.json.write_text(json.dumps(summaries, indent=1))
        if args.keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(summaries, servers, counts))
    print(f"\n{args.rounds} rounds, servers alternating; files: "
          f"{'small' if args.small else 'kernel 8 MiB, initrd 48 MiB'}; "
          f"{args.workers} client worker(s); jitter {args.jitter:g} s.")


if __name__ == "__main__":
    main()
