"""Turning a client-supplied file name into a path inside a folder, safely.

Shared by TFTP (``[tftp] root``, ``ipxe_dir``) and HTTP (``/files/{path}``, an
entry's files), so there is one place that decides what "inside" means:
leading ``/`` and Windows ``\\`` normalised, ``..`` segments and NUL bytes
refused, and symlinks resolved before checking the result is still inside.
"""

from __future__ import annotations

import os
from typing import Any


class PathRefusedError(Exception):
    """The name can never be served (traversal, NUL, a link out of the folder)."""


def normalise(name: str) -> str:
    """The relative path a client asked for, or raise :class:`PathRefusedError`."""
    if "\0" in name:
        raise PathRefusedError("invalid file name")
    path = name.replace("\\", "/").lstrip("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise PathRefusedError("access violation")
    return "/".join(parts)


def resolve_inside(folder: str | os.PathLike[str], relative: str,
                   links_may_leave: bool = False) -> str | None:
    """The real path of ``folder/relative`` if it exists, ``None`` if it does not.

    :param relative: a name already passed through :func:`normalise`.
    :param links_may_leave: trust symlinks that point out of ``folder``: for a folder a
        package manages (Debian's ``/usr/lib/ipxe/ipxe.efi`` links to ``/boot``), never
        for one operators or uploads fill. Names still cannot climb out with ``..``.
    :raises PathRefusedError: when it exists but its real path leaves ``folder``.
    """
    candidate = os.path.join(folder, relative)
    try:
        if not os.path.lexists(candidate):
            return None
        real = os.path.realpath(candidate)
        base = os.path.realpath(folder)
    except (OSError, ValueError):
        return None
    if not links_may_leave and os.path.commonpath([real, base]) != base:
        raise PathRefusedError("access violation")
    return real


class ResolvedNames:
    """:func:`resolve_inside`, remembered for names asked for again and again (every
    booting machine fetches the same kernel and initrd): resolving walks every
    component of the path twice (``realpath`` of the name and of the folder), where a
    remembered answer costs two ``stat`` calls.

    A remembered real path is given again only while the name (links followed) and the
    real path (``lstat``) both still lead to the file it named, the same (device,
    inode); anything else (the file replaced, a link or folder moved) resolves afresh
    with every check. ``limit`` bounds the memory: past it, everything is forgotten.
    TFTP remembers names by the same rule in :class:`pxetwist.tftp.files.FileResolver`,
    which also opens the file and checks the descriptor's inode; HTTP hands a path on.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._known: dict[tuple[str, str, bool], tuple[str, tuple[int, int]]] = {}

    def resolve(self, folder: str | os.PathLike[str], relative: str,
                links_may_leave: bool = False) -> str | None:
        """As :func:`resolve_inside` (same arguments, answers and exception)."""
        key = (os.fspath(folder), relative, links_may_leave)
        known = self._known.get(key)
        if known is not None:
            remembered, identity = known
            if _identity(os.path.join(key[0], relative), os.stat) == identity \
                    == _identity(remembered, os.lstat):
                return remembered
            del self._known[key]
        real = resolve_inside(folder, relative, links_may_leave)
        found = _identity(real, os.lstat) if real is not None else None
        if real is not None and found is not None:
            if len(self._known) >= self.limit:
                self._known.clear()
            self._known[key] = (real, found)
        return real


def _identity(path: str, stat: Any) -> tuple[int, int] | None:
    try:
        info = stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)
