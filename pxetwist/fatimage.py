"""FAT images for UEFI HTTP Boot under Secure Boot.

OVMF boots a URL ending in ``.img`` as a RAM disk and runs ``\\EFI\\BOOT\\BOOTX64.EFI``
from it. HTTP-booting shim alone fetches GRUB over HTTP, but the signed GRUB has no
HTTP and stops at ``grub>`` (LAB-NOTES). So a Secure Boot machine on HTTP Boot gets one
image holding the whole chain: shim as ``BOOTX64.EFI``, the signed GRUB beside it
(shim loads ``grubx64.efi`` from its own folder on a disk), ``/grub/grub.cfg`` (the
config rendered from the machine's boot plan: the network GRUB's prefix is ``/grub`` on
the device it was loaded from) and the entry's files at the paths that config names.

Built with mtools (``mformat``, ``mmd``, ``mcopy``: Debian's ``mtools``) in a thread,
cached by content (the files' paths, sizes and mtimes and the config text), at most
:data:`KEEP` images on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Images kept in the cache folder; the least recently used go first.
KEEP = 8
#: Spare room in an image beyond its files (FAT tables, directories), bytes.
SLACK = 2 * 1024 * 1024


class ImageError(Exception):
    """The image could not be built (mtools missing, a file gone, no space)."""


def mtools_missing() -> str | None:
    """Why images cannot be built here, or ``None``."""
    for tool in ("mformat", "mmd", "mcopy"):
        if shutil.which(tool) is None:
            return f"{tool} not found (install mtools)"
    return None


def image_key(files: Sequence[tuple[str, Path]], config: bytes) -> str:
    """The cache key of an image: what it holds, as names, sizes and mtimes."""
    digest = hashlib.sha256(config)
    for name, path in files:
        info = path.stat()
        digest.update(f"\0{name}\0{path}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def build_image(folder: Path, files: Sequence[tuple[str, Path]], config: bytes,
                config_name: str = "grub/grub.cfg") -> Path:
    """The image holding ``files`` (``image path -> source``) and ``config``, from the
    cache in ``folder`` or built now (blocking: run it in a thread).

    :raises ImageError: when it cannot be built.
    """
    missing = mtools_missing()
    if missing:
        raise ImageError(missing)
    try:
        key = image_key(files, config)
    except OSError as e:
        raise ImageError(f"cannot read {e.filename}: {e.strerror}") from None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.img"
    if target.is_file():
        os.utime(target)
        return target
    size = sum(path.stat().st_size for _, path in files) + len(config) + SLACK
    size = (size + size // 10 + 1024 * 1024 - 1) // (1024 * 1024) * (1024 * 1024)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        image = Path(tmp) / "image"
        with image.open("wb") as f:
            f.truncate(size)
        cfg = Path(tmp) / "grub.cfg"
        cfg.write_bytes(config)
        made: set[str] = set()
        steps: list[list[str]] = [["mformat", "-i", str(image), "-v", "PXETWIST", "::"]]
        for name, source in [*files, (config_name, cfg)]:
            parts = name.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder_name = "/".join(parts[:depth])
                if folder_name not in made:
                    made.add(folder_name)
                    steps.append(["mmd", "-i", str(image), f"::/{folder_name}"])
            steps.append(["mcopy", "-i", str(image), str(source), f"::/{'/'.join(parts)}"])
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, timeout=120,
                                  env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
            if done.returncode != 0:
                raise ImageError(f"{argv[0]} failed: "
                                 f"{done.stderr.decode(errors='replace').strip()[:200]}")
        os.replace(image, target)
    _prune(folder)
    return target


def _prune(folder: Path) -> None:
    images = sorted(folder.glob("*.img"), key=lambda p: p.stat().st_mtime)
    for old in images[:-KEEP]:
        old.unlink(missing_ok=True)
