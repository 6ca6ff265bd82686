"""Resolving a TFTP filename to something readable, with every safety check in one place.

A name is looked up in ``[tftp] root``, then ``[tftp] ipxe_dir``, then among
the files the catalog generates. Leading ``/`` and Windows ``\\`` are
normalised; ``..`` segments, NUL bytes, anything whose real path (symlinks
resolved) leaves its folder, and anything but a regular file are refused.

Small hot files (``undionly.kpxe`` is ~70 KB, ``ipxe.efi`` ~1 MB) are kept in
memory, keyed by path, mtime and size, so a boot storm reads each once; larger
files are read with ``os.pread`` in read-ahead chunks by the session.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from attrs import define, field, frozen

from pxetwist.paths import PathRefusedError, normalise, resolve_inside

#: Files up to this size are served from memory.
CACHE_FILE_LIMIT = 8 * 1024 * 1024
#: Total bytes the memory cache may hold.
CACHE_TOTAL_LIMIT = 64 * 1024 * 1024


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
    :ivar trusted: folders whose own symlinks may point elsewhere (``ipxe_dir``: see
        :func:`pxetwist.paths.resolve_inside`).
    :ivar open_descriptors: how many descriptors sessions hold right now.
    """

    folders: tuple[Path, ...]
    generated: Callable[[str], bytes | None] | None = None
    trusted: tuple[Path, ...] = ()
    open_descriptors: int = 0
    _cache: OrderedDict[_CacheKey, bytes] = field(factory=OrderedDict)
    _cache_bytes: int = 0

    def open(self, name: str, netascii: bool = False) -> FileSource:
        """Resolve ``name`` to a :class:`FileSource`.

        :raises FileRefusedError: error 1 (not found) or 2 (access violation).
        """
        try:
            relative = normalise(name)
        except PathRefusedError as e:
            raise FileRefusedError(2, str(e)) from None
        for folder in self.folders:
            source = self._open_in(folder, relative)
            if source is not None:
                return self._netascii(source) if netascii else source
        if self.generated is not None:
            content = self.generated(relative)
            if content is not None:
                source = FileSource(relative, len(content), data=content)
                return self._netascii(source) if netascii else source
        raise FileRefusedError(1, "file not found")

    def _netascii(self, source: FileSource) -> FileSource:
        content = source.read(0, source.size)
        source.close()
        converted = to_netascii(content)
        return FileSource(source.name, len(converted), data=converted)

    def _open_in(self, folder: Path, relative: str) -> FileSource | None:
        try:
            real = resolve_inside(folder, relative, links_may_leave=folder in self.trusted)
        except PathRefusedError:
            raise FileRefusedError(2, "access violation") from None
        if real is None:
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise FileRefusedError(2, "access violation") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileRefusedError(2, "not a regular file")
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
