"""The catalog: scanning folders, stable ids, settings that survive rescans and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from pxetwist.catalog import CatalogService, scan, slugify
from pxetwist.config import CatalogConfig
from pxetwist.store import Store


def make_catalog(root: Path) -> Path:
    """A catalog with one entry of each kind and one broken entry."""
    debian = root / "Debian 12"
    debian.mkdir(parents=True)
    (debian / "entry.ini").write_text(
        "[entry]\nname = Debian 12 installer\nkind = linux\nkernel = vmlinuz\n"
        "initrd = initrd.gz, firmware.cpio\ncmdline = priority=critical\n"
    )
    for name in ("vmlinuz", "initrd.gz", "firmware.cpio"):
        (debian / name).write_bytes(b"x" * 10)
    (root / "tools").mkdir()
    (root / "tools" / "memtest.efi").write_bytes(b"MZ" + b"\0" * 100)
    (root / "rescue.iso").write_bytes(b"\0" * 2048)
    (root / "hello.ipxe").write_text("#!ipxe\necho hello\n")
    (root / "demo.rts.png").write_bytes(b"\x89PNG")
    (root / ".hidden").write_text("skip me")
    broken = root / "broken"
    broken.mkdir()
    (broken / "entry.ini").write_text("[entry]\nkind = linux\nkernl = vmlinuz\n")
    return root


def test_scan_finds_every_kind(tmp_path: Path) -> None:
    """Folder entries and lone files are found with kinds from entry.ini or the suffix."""
    result = scan([make_catalog(tmp_path / "catalog")])
    kinds = {entry_id: entry.kind for entry_id, entry in result.entries.items()}
    assert kinds == {
        "debian-12": "linux",
        "tools-memtest-efi": "efi",
        "rescue-iso": "iso",
        "hello-ipxe": "ipxe",
        "demo-rts-png": "file",
    }
    debian = result.entries["debian-12"]
    assert debian.initrd == ("initrd.gz", "firmware.cpio")
    assert debian.cmdline == "priority=critical"
    assert debian.name == "Debian 12 installer"


def test_broken_entry_is_reported_with_file_and_key(tmp_path: Path) -> None:
    """A typo in entry.ini skips the entry and names the file and the key."""
    result = scan([make_catalog(tmp_path / "catalog")])
    assert "broken" not in result.entries
    [problem] = result.problems
    assert problem.path == tmp_path / "catalog" / "broken" / "entry.ini"
    assert problem.key == "kernl"
    assert problem.message == "unknown key"


@pytest.mark.parametrize(
    ("ini", "key", "words"),
    [
        ("[entry]\nkind = linux\n", "kernel", "needs a kernel"),
        ("[entry]\nkind = disk\nfile = x\n", "kind", "'disk' is not one of"),
        ("[entry]\nkind = efi\n", "file", "needs a file"),
        ("[entry]\nkind = linux\nkernel = ../../etc/passwd\n", "kernel", "must be a file name"),
        ("[entry]\nkind = linux\nkernel = missing\n", "kernel", "not found"),
        ("[entry]\nkind = efi\nfile = x.efi\ncmdline = a\n", "cmdline", "only linux"),
        ("[other]\nkind = efi\n", "", "must hold an [entry] section"),
    ],
)
def test_entry_errors(tmp_path: Path, ini: str, key: str, words: str) -> None:
    """Each entry.ini mistake is reported with its key."""
    folder = tmp_path / "c" / "e"
    folder.mkdir(parents=True)
    (folder / "entry.ini").write_text(ini)
    (folder / "x.efi").write_bytes(b"MZ")
    result = scan([tmp_path / "c"])
    assert result.entries == {}
    [problem] = result.problems
    assert problem.key == key and words in problem.message


def test_symlink_leaving_the_catalog_is_skipped(tmp_path: Path) -> None:
    """A symlink to a file outside the catalog is not offered."""
    (tmp_path / "c").mkdir()
    (tmp_path / "secret").write_text("x")
    (tmp_path / "c" / "link.iso").symlink_to(tmp_path / "secret")
    result = scan([tmp_path / "c"])
    assert result.entries == {}
    assert result.problems[0].message == "symlink leaves the catalog folder"


def test_urls_are_allowed_for_files(tmp_path: Path) -> None:
    """A linux entry may point its kernel and initrd at a mirror."""
    folder = tmp_path / "c" / "net"
    folder.mkdir(parents=True)
    (folder / "entry.ini").write_text(
        "[entry]\nkernel = http://mirror/linux\ninitrd = https://mirror/initrd.gz\n"
    )
    entry = scan([tmp_path / "c"]).entries["net"]
    assert entry.kind == "linux" and entry.main_path is None
    assert entry.initrd == ("https://mirror/initrd.gz",)


def test_ids_are_stable_and_unique(tmp_path: Path) -> None:
    """Ids are slugs of the relative path, the same on every scan, unique on collision."""
    root = tmp_path / "c"
    root.mkdir()
    (root / "a b.iso").write_bytes(b"1")
    (root / "a-b.iso").write_bytes(b"2")
    first = scan([root]).entries
    second = scan([root]).entries
    assert first.keys() == second.keys()
    assert len(first) == 2 and "a-b-iso" in first
    assert slugify("Sub/Ubuntu 24.04.iso") == "sub-ubuntu-24-04-iso"


def test_settings_survive_rescan_and_restart(tmp_path: Path) -> None:
    """PXE flag, label, order, default and args persist across a rescan and a new service."""
    root = make_catalog(tmp_path / "catalog")
    config = CatalogConfig(paths=(root,), rescan_interval=0, pxe_default=True)
    store = Store(tmp_path / "state.sqlite")
    catalog = CatalogService(config, store, Clock())
    catalog.load()
    catalog.set_pxe("rescue-iso", False)
    catalog.set_menu("debian-12", label="Install Debian", order=1, default=True,
                     kernel_args="quiet")
    catalog.set_menu("hello-ipxe", default=True)
    catalog.refresh()
    assert catalog.view("rescue-iso").pxe is False  # type: ignore[union-attr]
    store.close()

    store = Store(tmp_path / "state.sqlite")
    restarted = CatalogService(config, store, Clock())
    restarted.load()
    debian = restarted.view("debian-12")
    assert debian is not None
    assert (debian.label, debian.order, debian.kernel_args) == ("Install Debian", 1, "quiet")
    assert debian.default is False
    assert restarted.default_entry().entry.id == "hello-ipxe"  # type: ignore[union-attr]
    assert "rescue-iso" not in [v.entry.id for v in restarted.menu()]
    assert restarted.menu()[0].entry.id == "debian-12"
    store.close()


def test_new_entries_follow_pxe_default(tmp_path: Path) -> None:
    """With pxe_default = no, new entries are listed but not offered in the menu."""
    root = make_catalog(tmp_path / "catalog")
    config = CatalogConfig(paths=(root,), rescan_interval=0, pxe_default=False)
    catalog = CatalogService(config, Store(tmp_path / "s.sqlite"), Clock())
    catalog.load()
    assert catalog.menu() == []
    assert len(catalog.views()) == 5
    assert catalog.default_entry() is None


def test_toggle_unknown_entry_raises(tmp_path: Path) -> None:
    """Settings for an entry that does not exist are refused."""
    root = make_catalog(tmp_path / "catalog")
    catalog = CatalogService(CatalogConfig((root,), 0, True), Store(tmp_path / "s"), Clock())
    catalog.load()
    with pytest.raises(KeyError):
        catalog.set_pxe("nope", True)


def test_rescan_timer_picks_up_new_files(tmp_path: Path) -> None:
    """The rescan timer finds a file added after start."""
    root = tmp_path / "catalog"
    root.mkdir()
    clock = Clock()
    catalog = CatalogService(CatalogConfig((root,), 60, True), Store(tmp_path / "s"), clock)
    catalog.startService()
    assert catalog.entries == {}
    (root / "new.efi").write_bytes(b"MZ")
    clock.advance(60)
    assert list(catalog.entries) == ["new-efi"]
    catalog.stopService()


@pytest_twisted.ensureDeferred
async def test_file_changes_trigger_a_rescan(tmp_path: Path, reactor: object) -> None:
    """With inotify, a file dropped into the catalog appears without a refresh call."""
    from twisted.internet import task

    root = tmp_path / "catalog"
    root.mkdir()
    store = Store(tmp_path / "s.sqlite", reactor)  # type: ignore[arg-type]
    store.start()
    catalog = CatalogService(CatalogConfig((root,), 0, True), store, reactor)
    catalog.startService()
    try:
        (root / "dropped.iso").write_bytes(b"\0" * 16)
        for _ in range(50):
            if "dropped-iso" in catalog.entries:
                break
            await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        assert "dropped-iso" in catalog.entries
    finally:
        await catalog.stopService()
        store.close()
