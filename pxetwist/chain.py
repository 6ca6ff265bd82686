"""The files TFTP makes up or serves under another name: the signed chain's loaders,
GRUB configs rendered per machine, ``autoexec.ipxe``, ``boot.ipxe``/``menu.ipxe``,
and each catalog entry's files (the signed GRUB fetches kernel and initrd over TFTP).

Everything here renders a :class:`~pxetwist.policy.BootPlan` made by
:func:`plan_machine`, the same plan the HTTP boot script follows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from pxetwist import grub, signed
from pxetwist.catalog import CatalogService, is_url
from pxetwist.config import BootConfig, Config, normalise_mac
from pxetwist.http import ipxe
from pxetwist.machine_source import SourceAnswer
from pxetwist.machines import MachineRegistry
from pxetwist.policy import ENTRY, MENU, BootPlan, plan_boot
from pxetwist.templates import TemplateRenderError

_log = Logger()

_MACHINE_CONFIG = re.compile(rf"^{re.escape(grub.MACHINE_CONFIGS)}/([^/]+)\.cfg$")
_ENTRY_FILE = re.compile(rf"^{re.escape(grub.ENTRY_FILES)}/([a-z0-9-]+)/([^/]+)$")


def plan_machine(machines: MachineRegistry, catalog: CatalogService, boot: BootConfig,
                 mac: str, source: SourceAnswer | None = None) -> BootPlan:
    """What ``mac`` boots next: :func:`pxetwist.policy.plan_boot` over what the machine
    records and the catalog know (every renderer, iPXE or GRUB, starts here)."""
    entry_id = machines.boot_entry(mac)
    return plan_boot(entry_id, catalog.view(entry_id) if entry_id else None,
                     machines.is_local(mac), boot.unknown, source, boot.api_url)


def machine_grub_config(machines: MachineRegistry, catalog: CatalogService,
                        config: Config, mac: str,
                        args_for: grub.ArgsFor = grub.entry_args) -> tuple[BootPlan, str]:
    """The plan for ``mac`` and the GRUB config carrying it out, its kernel arguments
    made by ``args_for``. The machine source (``[boot] api_url``) is not asked: it
    answers with URLs, which this GRUB cannot fetch."""
    plan = plan_machine(machines, catalog, config.boot, mac)
    return plan, grub.plan_config(plan, mac, catalog.menu(), catalog.default_entry(),
                                  config.boot.menu_timeout, args_for)


class ChainFiles:
    """The TFTP resolver's ``generated`` and ``linked`` lookups."""

    def __init__(self, config: Config, catalog: CatalogService, machines: MachineRegistry,
                 base_url: str, args_for: grub.ArgsFor = grub.entry_args) -> None:
        self._config = config
        self._catalog = catalog
        self._machines = machines
        self._base_url = base_url
        self._args_for = args_for
        self._signed = signed.signed_files(config.boot)

    def generated(self, name: str) -> bytes | None:
        """``boot.ipxe``, ``autoexec.ipxe`` (what iPXE's signed build reads, the same
        chain), ``menu.ipxe``, ``grub/grub.cfg`` and ``grub/pxetwist/<MAC>.cfg``."""
        if name in ("boot.ipxe", "autoexec.ipxe"):
            return ipxe.entry_point_script(self._base_url).encode()
        if name == "menu.ipxe":
            return ipxe.menu_script(self._base_url, self._catalog.menu(),
                                    self._catalog.default_entry(),
                                    self._config.boot.menu_timeout).encode()
        if name == grub.GRUB_CFG:
            return grub.entry_point_config().encode()
        found = _MACHINE_CONFIG.match(name)
        if found is not None:
            mac = normalise_mac(found.group(1))
            if mac is None:
                return None
            plan, text = machine_grub_config(self._machines, self._catalog, self._config, mac,
                                             self._args_for)
            if plan.action == ENTRY and plan.entry_id is not None:
                self._served(mac, plan.entry_id)
            return text.encode()
        return None

    def _served(self, mac: str, entry_id: str) -> None:
        """The kernel then comes over TFTP, where the MAC is not known: a pending machine
        is installing once it fetched the GRUB config that boots its entry."""
        d = self._machines.boot_file_fetched(mac, entry_id, "GRUB config")
        if d is not None:
            d.addErrback(lambda failure: _log.failure(
                "recording that {mac} fetched the GRUB config of {entry} failed", failure,
                mac=mac, entry=entry_id))

    def linked(self, name: str) -> Path | None:
        """Debian's signed shim and GRUB under the names shim expects
        (``shimx64.efi``, ``grubx64.efi``...), and ``pxetwist/entries/<id>/<file>``: a
        file the entry names (kernel, initrd, its main file), inside its folder."""
        if name in self._signed:
            return self._signed[name]
        found = _ENTRY_FILE.match(name)
        if found is None:
            return None
        view = self._catalog.view(found.group(1))
        file = found.group(2)
        if view is None or is_url(file):
            return None
        entry = view.entry
        if file not in (entry.kernel, entry.file, *entry.initrd) or not file:
            return None
        folder = os.path.realpath(entry.folder)
        real = os.path.realpath(entry.folder / file)
        if os.path.commonpath([folder, real]) != folder or not os.path.isfile(real):
            return None
        return Path(real)


def chain_files(config: Config, catalog: CatalogService, machines: MachineRegistry,
                base_url: str, args_for: grub.ArgsFor = grub.entry_args
                ) -> tuple[Callable[[str], bytes | None], Callable[[str], Path | None]]:
    """``(generated, linked)`` for the TFTP resolver."""
    files = ChainFiles(config, catalog, machines, base_url, args_for)
    return files.generated, files.linked


def image_parts(config: Config, catalog: CatalogService, plan: BootPlan, mac: str,
                family: signed.Family, args_for: grub.ArgsFor = grub.entry_args
                ) -> tuple[list[tuple[str, Path]], bytes] | str:
    """What the Secure Boot HTTP Boot image of ``plan`` holds: ``(files, grub.cfg)``
    (image path -> source; :func:`pxetwist.fatimage.build_image`), or why there is none
    (local boot, nothing GRUB can boot, the chain's files missing)."""
    found = signed.signed_files(config.boot)
    if family.shim not in found or family.grub not in found:
        return f"{family.shim} or {family.grub} not found ([boot] shim_dir, grub_dir)"
    if plan.action == ENTRY and plan.entry is not None:
        views = [plan.entry]
    elif plan.action == MENU:
        views = [view for view in catalog.menu() if not grub.refusal(view)]
    else:
        return f"no image for this plan ({plan.reason})"
    files = [(f"EFI/BOOT/{family.removable}", found[family.shim]),
             (f"EFI/BOOT/{family.grub}", found[family.grub])]
    for view in views:
        entry = view.entry
        if grub.refusal(view):
            return f"entry {entry.id}: {grub.refusal(view)}"
        names = (entry.kernel, *entry.initrd) if entry.kind == "linux" else (entry.file,)
        files += [(grub.entry_file_path(entry.id, name).lstrip("/"), entry.folder / name)
                  for name in names]
    if len(files) == 2:
        return "no entry GRUB can boot is offered"
    text = grub.plan_config(plan, mac, catalog.menu(), catalog.default_entry(),
                            config.boot.menu_timeout, args_for)
    return files, text.encode()


def explain_chain(config: Config, loader: str, loader_why: str, plan: BootPlan,
                  mac: str, args_for: grub.ArgsFor = grub.entry_args) -> dict[str, Any]:
    """Explain's ``secure_boot`` part for ``mac``: its loader and what Secure Boot does
    with it, whether the planned entry's kernel is signed, GRUB's view of the plan."""
    notes: list[str] = []
    if loader == signed.IPXE:
        notes.append("loader ipxe: iPXE is not signed for Secure Boot, so this machine "
                     "cannot boot where Secure Boot is on (set its loader to shim)")
    elif config.dhcp.mode == "proxy" and config.boot.shim_second_stage == "grub":
        notes.append("proxy mode with the shim loader: the signed GRUB takes its TFTP "
                     "server from the site's DHCP reply, so the site's DHCP server must "
                     "name this server as next-server (dnsmasq: dhcp-boot=,,SERVER_IP)")
    body: dict[str, Any] = {"loader": loader, "loader_reason": loader_why, "notes": notes}
    view = plan.entry if plan.action == ENTRY else None
    if view is not None:
        refused = grub.refusal(view)
        body["grub_refuses"] = refused or None
        kernel = view.entry.kernel if view.entry.kind == "linux" else view.entry.file
        signed_kernel = None
        if kernel and not is_url(kernel):
            signed_kernel = signed.authenticode_signed(view.entry.folder / kernel)
        body["kernel_signed"] = signed_kernel
        if signed_kernel is False or (signed_kernel is None and not refused):
            notes.append(f"entry {view.entry.id}: {kernel or 'its file'} carries no "
                         "Authenticode signature: it will be refused under Secure Boot")
        if refused:
            notes.append(f"entry {view.entry.id}: {refused}")
        if view.entry.kind == "linux":
            try:
                body["grub_arg_problems"] = args_for(view, mac)[1]
            except TemplateRenderError as e:
                body["grub_arg_problems"] = [f"cmdline cannot be rendered: {e}"]
    return body
