"""Resolving a TFTP filename to something readable, with every safety check in one place.

A name is looked up in ``[tftp] root``, then ``[tftp] ipxe_dir``, then among
the files the catalog generates. Leading ``/`` and Windows ``\\`` are
normalised; ``..`` segments, NUL bytes, anything whose real path (symlinks
resolved) leaves its folder, and anything but a regular file are refused.

Small hot files (``undionly.kpxe`` is ~70 KB, ``ipxe.efi`` ~1 MB) are kept in
memory, keyed by path, mtime and size, so a boot storm reads each once; larger
files are read with ``os.pread`` in read-ahead chunks by the session.

Resolving a name (``realpath`` of the name and of its folder: an ``lstat`` per path
component) was a quarter of starting a transfer in a boot storm (bench/RESULTS.md,
issue 18). So the real path of a name found in a folder is
remembered with the identity (device, inode) of the file it named, and reused only
while the name still leads to that same file (one ``stat`` that follows links) and the
real path still names it (``open`` without following a link, then ``fstat``); anything
else (the file replaced, a link changed to point elsewhere, the name gone) resolves the
name again with every check. A name is thus only ever answered with a file that a full
resolution found inside its folder.

netascii is converted as a stream (:class:`NetasciiSource`), a chunk at a time as the
session reads, never the whole file at once. Its converted size is not known until the
last chunk has been converted, so a netascii transfer acknowledges no ``tsize`` (RFC 2347
lets a server leave out an option it does not support): counting it first would read the
whole file before the first packet.
"""

from __future__ import annotations

import os
import stat
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from attrs import define, field, frozen

from pxetwist.paths import PathRefusedError, normalise, resolve_inside

#: Files up to this size are served from memory.
CACHE_FILE_LIMIT = 8 * 1024 * 1024
#: Total bytes the memory cache may hold.
CACHE_TOTAL_LIMIT = 64 * 1024 * 1024
#: Names whose resolution is remembered (all are forgotten when it is full).
RESOLVED_LIMIT = 4096
#: Bytes of the file converted to netascii at a time.
NETASCII_CHUNK = 64 * 1024


class FileRefusedError(Exception):
    """The name cannot be served. :ivar code: the TFTP error code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@define
class FileSource:
    """Readable content of one resolved file, shared by sessions.

    Either ``data`` holds the whole content, or ``fd`` is an open descriptor read
    with ``os.pread``; :meth:`close` releases the descriptor (the resolver counts
    how many are open, for leak tests).
    """

    name: str
    size: int
    data: bytes | None = None
    fd: int | None = None
    _on_close: Callable[[], None] | None = None

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` (fewer at the end of the file)."""
        if self.data is not None:
            return self.data[offset:offset + length]
        assert self.fd is not None
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            if self._on_close is not None:
                self._on_close()


def to_netascii(data: bytes) -> bytes:
    """RFC 764 netascii: LF -> CR LF, bare CR -> CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@define
class NetasciiSource:
    """A file's netascii form, converted as it is read: what :meth:`read` takes and returns
    are offsets and bytes of the converted stream.

    Each byte of the file converts on its own (to one or two bytes), so the stream is the
    concatenation of the converted chunks; a CR LF or CR NUL pair may fall across a DATA
    block edge, which is why blocks are cut from the converted stream, not per chunk.
    Reads go forward from the last one, converting :data:`NETASCII_CHUNK` bytes at a time
    and keeping only what is still ahead of them; going back (a window resent) restarts at
    the nearest earlier chunk, whose converted offset was noted on the way.

    :ivar size: the converted size once the end of the file was reached, else ``None``.
    :ivar data: always ``None`` (the session then reads through :meth:`read`).
    """

    source: FileSource
    size: int | None = None
    data: None = None
    _buffer: bytes = b""
    #: the converted offset of ``_buffer[0]``, and the file offset after its last byte
    _buffer_start: int = 0
    _next_chunk: int = 0
    #: converted offsets of the chunks converted so far, one per chunk
    _chunk_starts: list[int] = field(factory=lambda: [0])

    @property
    def name(self) -> str:
        return self.source.name

    def read(self, offset: int, length: int) -> bytes:
        """Converted bytes ``[offset, offset+length)`` (fewer at the end)."""
        if self.size is not None and offset >= self.size:
            return b""
        end = self._buffer_start + len(self._buffer)
        if offset < self._buffer_start or offset > end:
            index = bisect_right(self._chunk_starts, offset) - 1
            self._buffer, self._buffer_start = b"", self._chunk_starts[index]
            self._next_chunk = index * NETASCII_CHUNK
            end = self._buffer_start
        while end < offset + length and self._next_chunk < self.source.size:
            chunk = self.source.read(self._next_chunk, NETASCII_CHUNK)
            if not chunk:
                break
            keep = min(max(offset - self._buffer_start, 0), len(self._buffer))
            self._buffer = self._buffer[keep:] + to_netascii(chunk)
            self._buffer_start += keep
            self._next_chunk += len(chunk)
            end = self._buffer_start + len(self._buffer)
            if self._next_chunk // NETASCII_CHUNK == len(self._chunk_starts):
                self._chunk_starts.append(end)
        if self._next_chunk >= self.source.size or end < offset + length:
            self.size = end
        start = offset - self._buffer_start
        return self._buffer[start:start + length]

    def close(self) -> None:
        self._buffer = b""
        self.source.close()


#: What a session sends: a file as it is, or its netascii form.
Source = FileSource | NetasciiSource


@frozen
class _CacheKey:
    path: str
    mtime_ns: int
    size: int


@define
class FileResolver:
    """Finds files for TFTP requests.

    :ivar folders: searched in order (``root``, then ``ipxe_dir``).
    :ivar generated: ``name -> bytes`` for files the catalog makes, or ``None``.
    :ivar linked: ``name -> path`` for files served under another name than their own
        (the signed shim and GRUB, an entry's kernel and initrd), looked up after the
        folders; the path it gives is trusted (it is not in a searched folder).
    :ivar trusted: folders whose own symlinks may point elsewhere (``ipxe_dir``: see
        :func:`pxetwist.paths.resolve_inside`).
    :ivar open_descriptors: how many descriptors sessions hold right now.
    """

    folders: tuple[Path, ...]
    generated: Callable[[str], bytes | None] | None = None
    trusted: tuple[Path, ...] = ()
    linked: Callable[[str], Path | None] | None = None
    open_descriptors: int = 0
    _cache: OrderedDict[_CacheKey, bytes] = field(factory=OrderedDict)
    _cache_bytes: int = 0
    #: ``(folder, name) -> (real path, (st_dev, st_ino))`` of names resolved in a folder
    _resolved: dict[tuple[Path, str], tuple[str, tuple[int, int]]] = field(factory=dict)

    def open(self, name: str, netascii: bool = False) -> Source:
        """Resolve ``name`` to a :class:`FileSource` (a :class:`NetasciiSource` over it with
        ``netascii``).

        :raises FileRefusedError: error 1 (not found) or 2 (access violation).
        """
        try:
            relative = normalise(name)
        except PathRefusedError as e:
            raise FileRefusedError(2, str(e)) from None
        for folder in self.folders:
            source = self._open_in(folder, relative)
            if source is not None:
                return NetasciiSource(source) if netascii else source
        target = self.linked(relative) if self.linked is not None else None
        if target is not None:
            source = self._open_real(str(target), relative)
            return NetasciiSource(source) if netascii else source
        if self.generated is not None:
            content = self.generated(relative)
            if content is not None:
                source = FileSource(relative, len(content), data=content)
                return NetasciiSource(source) if netascii else source
        raise FileRefusedError(1, "file not found")

    def _open_in(self, folder: Path, relative: str) -> FileSource | None:
        key = (folder, relative)
        known = self._resolved.get(key)
        if known is not None:
            source = self._reopen(folder, relative, *known)
            if source is not None:
                return source
            del self._resolved[key]
        try:
            real = resolve_inside(folder, relative, links_may_leave=folder in self.trusted)
        except PathRefusedError:
            raise FileRefusedError(2, "access violation") from None
        if real is None:
            return None
        return self._open_real(real, relative, remember=key)

    def _reopen(self, folder: Path, relative: str, real: str,
                identity: tuple[int, int]) -> FileSource | None:
        """The file a name resolved to before, if the name still leads to it and its real
        path still names it; ``None``: resolve again."""
        try:
            now = os.stat(os.path.join(folder, relative))
        except (OSError, ValueError):
            return None
        if (now.st_dev, now.st_ino) != identity:
            return None
        try:
            return self._open_real(real, relative, identity=identity)
        except FileRefusedError:
            return None

    def _open_real(self, real: str, relative: str,
                   remember: tuple[Path, str] | None = None,
                   identity: tuple[int, int] | None = None) -> FileSource:
        """Open the resolved ``real`` path. :param remember: note its resolution under this
        key. :param identity: refuse it unless it is this file (device, inode)."""
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise FileRefusedError(2, "access violation") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileRefusedError(2, "not a regular file")
            if identity is not None and (info.st_dev, info.st_ino) != identity:
                raise FileRefusedError(2, "changed since it was resolved")
            if remember is not None:
                if len(self._resolved) >= RESOLVED_LIMIT:
                    self._resolved.clear()
                self._resolved[remember] = (real, (info.st_dev, info.st_ino))
            if info.st_size <= CACHE_FILE_LIMIT:
                key = _CacheKey(real, info.st_mtime_ns, info.st_size)
                data = self._cached(key, fd)
                return FileSource(relative, len(data), data=data)
        except BaseException:
            os.close(fd)
            raise
        self.open_descriptors += 1
        return FileSource(relative, info.st_size, fd=fd, on_close=self._closed)

    def _closed(self) -> None:
        self.open_descriptors -= 1

    def _cached(self, key: _CacheKey, fd: int) -> bytes:
        """The whole small file from the cache, or read now and remembered; closes ``fd``."""
        try:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                return data
            chunks = []
            offset = 0
            while offset < key.size:
                chunk = os.pread(fd, key.size - offset, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            data = b"".join(chunks)
        finally:
            os.close(fd)
        for old in [k for k in self._cache if k.path == key.path]:
            self._cache_bytes -= len(self._cache.pop(old))
        self._cache[key] = data
        self._cache_bytes += len(data)
        while self._cache_bytes > CACHE_TOTAL_LIMIT and self._cache:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted)
        return data
