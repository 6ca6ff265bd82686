"""Issues 14 and 15 together: the signed GRUB boots a machine with its own templated kernel
line, and one PUT or bulk row sets loader, hostname, vars and the assignment at once."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock

from pxetwist.catalog import CatalogService
from pxetwist.chain import chain_files
from pxetwist.config import load_text
from pxetwist.events import EventBus
from pxetwist.http.unattended import Unattended
from pxetwist.machines import MachineRegistry
from pxetwist.store import Store
from pxetwist.tftp.files import FileResolver
from tests.http.helpers import MAC, make_rig
from tests.test_signed import BASE, config_text, read

HYPHEN = MAC.replace(":", "-")


def grub_rig(tmp_path: Path, cmdline: str) -> tuple[FileResolver, MachineRegistry]:
    """The TFTP files of a shim-loader server whose one linux entry has ``cmdline``."""
    config = load_text(config_text(tmp_path, "efi_loader = shim\n"), tmp_path)
    entry = tmp_path / "catalog" / "installer"
    entry.mkdir()
    (entry / "entry.ini").write_text("[entry]\nkind = linux\nkernel = vmlinuz\n"
                                     f"cmdline = {cmdline}\n[vars]\nsuite = bookworm\n")
    (entry / "vmlinuz").write_bytes(b"kernel")
    store = Store(tmp_path / "s.sqlite")
    catalog = CatalogService(config.catalog, store, MemoryReactorClock())
    catalog.load()
    machines = MachineRegistry(store, EventBus(MemoryReactorClock()), MemoryReactorClock())
    unattended = Unattended(machines, BASE, config.dhcp.reservations)
    generated, linked = chain_files(config, catalog, machines, BASE, unattended.grub_args)
    return FileResolver((config.tftp.root,), generated, linked=linked), machines


def test_grub_config_has_the_machines_templated_kernel_line(tmp_path: Path) -> None:
    """The per-machine GRUB config writes the cmdline rendered for that machine (its
    templates URL, hostname and vars), and fetching it starts a one-shot install."""
    resolver, machines = grub_rig(
        tmp_path, "auto=true url={{ templates_url }}preseed.cfg "
                  "hostname={{ hostname }} suite={{ vars.suite }}")
    machines.assign(MAC, "installer", once=True, hostname="node-7")
    text = read(resolver, f"grub/pxetwist/{MAC}.cfg").decode()
    assert f"'url={BASE}/machines/{HYPHEN}/templates/preseed.cfg'" in text
    assert "'hostname=node-7'" in text and "'suite=bookworm'" in text
    assert "{{" not in text
    assert machines.get(MAC).state == "installing"  # type: ignore[union-attr]


def test_grub_refuses_an_entry_whose_cmdline_cannot_render_for_the_machine(
        tmp_path: Path) -> None:
    """A cmdline needing a variable this machine lacks boots nothing under GRUB (an
    echo with the reason, then local boot), never a kernel with half its arguments."""
    resolver, machines = grub_rig(tmp_path, "role={{ vars.role }}")
    machines.assign(MAC, "installer", once=True)
    text = read(resolver, f"grub/pxetwist/{MAC}.cfg").decode()
    assert "linux " not in text
    assert "cannot be rendered" in text and "exit" in text


def test_put_and_bulk_set_loader_with_the_assignment(tmp_path: Path) -> None:
    """One PUT with entry, hostname and loader is one assignment carrying all three; a
    bulk row's loader is applied too, and a bad one refuses the whole list."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.put(f"/machines/{MAC}", {"entry": "lab", "hostname": "web-1",
                                                 "loader": "shim"})
    assert code == 200, body
    record = json.loads(body)
    assert (record["loader"], record["hostname"], record["entry"]) == ("shim", "web-1", "lab")
    assert rig.machines.get(MAC).assignment == 1  # type: ignore[union-attr]
    other = "52:54:00:00:00:09"
    code, body, _ = rig.post("/machines", [{"mac": other, "entry": "lab", "loader": "ipxe"},
                                           {"mac": MAC, "entry": "lab", "loader": None}])
    assert code == 200, body
    assert rig.machines.get(other).loader == "ipxe"  # type: ignore[union-attr]
    assert rig.machines.get(MAC).loader is None  # type: ignore[union-attr]
    code, body, _ = rig.post("/machines", [{"mac": other, "entry": "lab", "loader": "pxe"}])
    assert code == 400 and json.loads(body)["rows"][0]["row"] == 0
    assert rig.machines.get(other).loader == "ipxe"  # type: ignore[union-attr]
