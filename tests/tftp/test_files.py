"""Resolving TFTP names: search order, normalisation, and every way out of the root refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.paths import normalise
from pxetwist.tftp import files
from pxetwist.tftp.files import FileRefusedError, FileResolver, FileSource, NetasciiSource


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    ipxe = tmp_path / "ipxe"
    (root / "sub").mkdir(parents=True)
    ipxe.mkdir()
    (root / "pxelinux.0").write_bytes(b"root copy")
    (root / "sub" / "grub.cfg").write_bytes(b"cfg")
    (ipxe / "undionly.kpxe").write_bytes(b"ipxe build")
    (ipxe / "pxelinux.0").write_bytes(b"ipxe copy")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "inside").symlink_to(root / "sub" / "grub.cfg")
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    return root, ipxe


def test_root_then_ipxe_dir_then_generated(folders: tuple[Path, Path]) -> None:
    """Lookup order: root, ipxe_dir, then files the catalog generates."""
    resolver = FileResolver(folders, lambda name: b"made" if name == "menu.ipxe" else None)
    assert resolver.open("pxelinux.0").read(0, 100) == b"root copy"
    assert resolver.open("undionly.kpxe").read(0, 100) == b"ipxe build"
    assert resolver.open("menu.ipxe").read(0, 100) == b"made"
    with pytest.raises(FileRefusedError) as info:
        resolver.open("missing")
    assert info.value.code == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [("/sub/grub.cfg", "sub/grub.cfg"), ("\\sub\\grub.cfg", "sub/grub.cfg"),
     ("sub//./grub.cfg", "sub/grub.cfg"), ("///pxelinux.0", "pxelinux.0")],
)
def test_names_are_normalised(name: str, expected: str) -> None:
    """Leading slashes, backslashes, '.' and empty segments are normalised away."""
    assert normalise(name) == expected


ATTACKS = [
    "..", "../secret", "../../etc/passwd", "/../secret", "sub/../../secret", "..\\secret",
    "\\..\\..\\etc\\passwd", "sub\\..\\..\\secret", "./../secret", "....//..//secret/..",
    "a/../../secret", "/", "", ".", "./", "sub/..", "\0", "pxelinux.0\0.txt",
    "escape", "dir", "fifo", "sub", "/etc/passwd", "//etc/passwd", "C:\\Windows\\win.ini",
    "sub/../../../../../../etc/shadow", "%2e%2e/secret", "..%2fsecret", "\\\\server\\share",
    "../root/pxelinux.0", "sub/./../../secret", "..\0/secret", "/proc/self/environ",
    "dir/../../secret", "...", ". ./secret",
]


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_names_never_reach_outside_files(folders: tuple[Path, Path], name: str) -> None:
    """Traversal, NUL, absolute, Windows separators, symlinks out, non-regular files:
    refused (or simply not found inside the root); never the secret."""
    resolver = FileResolver(folders)
    try:
        source = resolver.open(name)
    except FileRefusedError as e:
        assert e.code in (1, 2)
    else:
        content = source.read(0, 1000)
        source.close()
        assert content != b"secret"
        assert not os.path.isabs(source.name) and ".." not in source.name.split("/")
    assert resolver.open_descriptors == 0


def test_symlink_inside_the_root_is_served(folders: tuple[Path, Path]) -> None:
    """A symlink that stays inside the root is fine."""
    assert FileResolver(folders).open("inside").read(0, 10) == b"cfg"


def test_symlink_leaving_the_root_is_error_2(folders: tuple[Path, Path]) -> None:
    """A symlink that leaves the root is an access violation, not a fallback."""
    with pytest.raises(FileRefusedError) as info:
        FileResolver(folders).open("escape")
    assert info.value.code == 2


def test_a_resolved_name_replaced_by_a_link_out_of_the_root_is_error_2(
        folders: tuple[Path, Path]) -> None:
    """A name resolved before (its real path remembered) that now is a symlink leaving the
    root is refused, not answered with the file it named before."""
    root, _ = folders
    resolver = FileResolver(folders)
    assert resolver.open("pxelinux.0").data == b"root copy"
    (root / "pxelinux.0").unlink()
    (root / "pxelinux.0").symlink_to(root.parent / "secret")
    with pytest.raises(FileRefusedError) as info:
        resolver.open("pxelinux.0")
    assert info.value.code == 2


def test_a_resolved_folder_swapped_for_a_link_out_of_the_root_is_error_2(
        folders: tuple[Path, Path]) -> None:
    """A folder on the way to a resolved name, swapped for a symlink that leaves the root,
    is refused too (the name no longer leads to the file resolved before)."""
    root, _ = folders
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "grub.cfg").write_bytes(b"not yours")
    resolver = FileResolver(folders)
    assert resolver.open("sub/grub.cfg").read(0, 10) == b"cfg"
    (root / "inside").unlink()  # the fixture's link into sub/
    (root / "sub").rename(root / "old")
    (root / "sub").symlink_to(outside)
    with pytest.raises(FileRefusedError) as info:
        resolver.open("sub/grub.cfg")
    assert info.value.code == 2


def test_a_resolved_name_that_is_gone_or_replaced_resolves_again(
        folders: tuple[Path, Path]) -> None:
    """Removed from the root: the next folder's copy; a new file under the name: its bytes."""
    root, _ = folders
    resolver = FileResolver(folders)
    assert resolver.open("pxelinux.0").data == b"root copy"
    (root / "pxelinux.0").unlink()
    assert resolver.open("pxelinux.0").data == b"ipxe copy"
    (root / "pxelinux.0").write_bytes(b"a new file")
    assert resolver.open("pxelinux.0").data == b"a new file"


def test_small_files_are_cached_until_they_change(folders: tuple[Path, Path]) -> None:
    """A cached small file is served from memory until its mtime or size changes."""
    root, _ = folders
    resolver = FileResolver(folders)
    assert resolver.open("pxelinux.0").data == b"root copy"
    (root / "pxelinux.0").write_bytes(b"new content!")
    os.utime(root / "pxelinux.0", ns=(1, 10**18))
    assert resolver.open("pxelinux.0").data == b"new content!"


def test_large_files_use_a_descriptor_that_is_released(tmp_path: Path) -> None:
    """Files above the cache limit are read with pread and closed on close()."""
    (tmp_path / "r").mkdir()
    big = tmp_path / "r" / "big.iso"
    with big.open("wb") as f:
        f.truncate(9 * 1024 * 1024)
    resolver = FileResolver((tmp_path / "r",))
    source = resolver.open("big.iso")
    assert source.data is None and resolver.open_descriptors == 1
    assert source.read(9 * 1024 * 1024 - 2, 10) == b"\0\0"
    source.close()
    source.close()
    assert resolver.open_descriptors == 0


def test_trusted_ipxe_dir_may_link_out_but_not_climb_out(tmp_path: Path) -> None:
    """Debian's ipxe.efi is a link to /boot: served from a trusted ipxe_dir; the root stays
    strict, and '..' is refused everywhere."""
    root, ipxe, boot = tmp_path / "root", tmp_path / "ipxe", tmp_path / "boot"
    for folder in (root, ipxe, boot):
        folder.mkdir()
    (boot / "ipxe.efi").write_bytes(b"MZ efi")
    (ipxe / "ipxe.efi").symlink_to(boot / "ipxe.efi")
    (root / "out.efi").symlink_to(boot / "ipxe.efi")
    resolver = FileResolver((root, ipxe), trusted=(ipxe,))
    assert resolver.open("ipxe.efi").read(0, 10) == b"MZ efi"
    with pytest.raises(FileRefusedError):
        resolver.open("out.efi")
    with pytest.raises(FileRefusedError):
        resolver.open("../boot/ipxe.efi")


#: Text rich in line ends, so that CR LF and CR NUL pairs land on chunk and block edges.
LINE_ENDS = st.binary(max_size=600).map(
    lambda b: bytes(b"\r\n\n\rx"[c % 5] if c % 3 else c for c in b))


class CountingSource(FileSource):
    """A FileSource that remembers the largest read asked of it."""

    largest: int = 0

    def read(self, offset: int, length: int) -> bytes:
        self.largest = max(self.largest, length)
        return super().read(offset, length)


@settings(max_examples=300, deadline=None)
@given(content=LINE_ENDS, chunk=st.integers(1, 40), block=st.integers(1, 70),
       back=st.lists(st.integers(0, 3), max_size=30))
def test_streamed_netascii_equals_the_whole_file_conversion(
        content: bytes, chunk: int, block: int, back: list[int]) -> None:
    """For any bytes, chunk size and block size, reading the netascii stream block by block,
    stepping back now and then as a resent window does, gives exactly to_netascii(file),
    reads the file a chunk at a time, and learns the converted size at the end."""
    expected = files.to_netascii(content)
    plain = CountingSource("t", len(content), data=content)
    stream = NetasciiSource(plain)
    offset = 0
    steps = iter(back)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "NETASCII_CHUNK", chunk)
        while True:
            piece = stream.read(offset, block)
            assert piece == expected[offset:offset + block]
            if len(piece) < block:
                break
            offset = max(offset + block - block * next(steps, 0), 0)
        assert stream.size == len(expected)
        assert plain.largest <= chunk
        assert stream.read(len(expected) + 5, block) == b""


def test_netascii_of_a_large_file_keeps_its_descriptor_and_reads_a_chunk_at_a_time(
        tmp_path: Path) -> None:
    """A netascii open of a file past the cache limit converts nothing up front (issue 13
    item 2: it used to read and convert the whole file on the reactor thread)."""
    (tmp_path / "r").mkdir()
    line = b"line of text\n"
    size = files.CACHE_FILE_LIMIT + len(line) * 1000
    (tmp_path / "r" / "big.txt").write_bytes(line * (size // len(line)))
    resolver = FileResolver((tmp_path / "r",))
    source = resolver.open("big.txt", netascii=True)
    assert isinstance(source, NetasciiSource)
    assert resolver.open_descriptors == 1 and source.size is None
    assert source.read(0, 28) == b"line of text\r\nline of text\r\n"
    source.close()
    assert resolver.open_descriptors == 0
