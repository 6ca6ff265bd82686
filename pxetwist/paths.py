"""Turning a client-supplied file name into a path inside a folder, safely.

Shared by TFTP (``[tftp] root``, ``ipxe_dir``) and HTTP (``/files/{path}``, an
entry's files), so there is one place that decides what "inside" means:
leading ``/`` and Windows ``\\`` normalised, ``..`` segments and NUL bytes
refused, and symlinks resolved before checking the result is still inside.
"""

from __future__ import annotations

import os


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
