"""What a machine boots: the two decisions, each in one place.

:class:`BootPolicy`: what a client gets from DHCP, from what it tells about itself.
Shared by the DHCP server (what to put in ``file``/``siaddr``/option 60) and the
HTTP explain endpoint (the same answer for every architecture, without a client
asking), so the two can never disagree.

:func:`plan_boot`: what a MAC's boot script does next (an entry, the machine
source's kernel, the menu, or local boot, and why). The boot script routes,
``/api/v1/boot`` and explain all render this one plan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import frozen

from pxetwist import signed
from pxetwist.arch import BY_CODE, BY_NAME, DEFAULT_KEY, Arch, firmware_of_code, firmware_of_file
from pxetwist.catalog import EntryView, is_url
from pxetwist.config import BootConfig
from pxetwist.machine_source import ANSWERED, ExternalBoot, SourceAnswer

#: The architectures explain lists (every IANA code 0-19, and 41).
EXPLAINED_CODES: tuple[int, ...] = (*range(20), 41)


@frozen
class ClientFacts:
    """What a DHCP client said about itself.

    :ivar arch: option-93 code, or ``None`` when absent.
    :ivar vendor_class: option 60 (``PXEClient:Arch:...``, ``HTTPClient:...``, ...).
    :ivar is_ipxe: option 77 ``iPXE`` or option 175 was present.
    """

    mac: str
    arch: int | None
    vendor_class: str = ""
    is_ipxe: bool = False
    uuid: str = ""

    @property
    def is_http_client(self) -> bool:
        return self.vendor_class.startswith("HTTPClient")

    @property
    def is_pxe_client(self) -> bool:
        return self.vendor_class.startswith("PXEClient") or self.is_http_client


@frozen
class BootDecision:
    """What to hand a client.

    :ivar how: ``tftp`` (``filename`` is a TFTP path on ``next_server``), ``http``
        (``filename`` is a URL) or ``none`` (no loader for this architecture: the
        client gets no boot file, rather than one built for another architecture).
    :ivar vendor_class: option 60 for the reply (``PXEClient``/``HTTPClient``), or ``None``.
    :ivar arch: the architecture's name (``unknown-N`` for unassigned codes).
    """

    how: str
    filename: str
    next_server: str
    vendor_class: str | None
    arch: str
    reason: str

    def as_json(self, code: int | None = None) -> dict[str, Any]:
        return {"arch": self.arch, "code": code, "how": self.how, "file": self.filename,
                "reason": self.reason}


class BootPolicy:
    """Maps client facts to a boot file, per ``[boot.files]``.

    :param base_url: the HTTP base iPXE and HTTP-boot clients are sent to.
    :param server_address: next-server for TFTP answers.
    :param loader_of: MAC -> the machine's own loader (``ipxe``/``shim``), or ``None``
        to follow ``[boot] efi_loader``.
    """

    def __init__(self, config: BootConfig, base_url: str, server_address: str,
                 loader_of: Callable[[str], str | None] | None = None) -> None:
        self._files = dict(config.files)
        self._base_url = base_url
        self._server = server_address
        self._config = config
        self._loader_of = loader_of

    def loader(self, mac: str) -> tuple[str, str]:
        """``(loader, why)``: the EFI loader ``mac`` is sent (``ipxe`` or ``shim``)."""
        own = self._loader_of(mac) if self._loader_of is not None else None
        return signed.loader_for(own, self._config.efi_loader)

    def _file_for(self, code: int | None, arch: Arch | None) -> tuple[str, str] | None:
        """The configured file and which ``[boot.files]`` key gave it, or ``None`` when
        no key fits: ``default`` serves codes of the firmware kind its file is built for
        (a BIOS file never reaches a UEFI client) and codes the registry does not
        assign (their kind is unknown, so SPEC DHCP-05's fallback holds)."""
        keys: list[str] = []
        if code is not None:
            keys.append(str(code))
        else:
            keys.append("bios")  # no option 93: a legacy BIOS PXE ROM
        while arch is not None:  # the name, then the PXE code an HTTP-boot code runs
            keys.append(arch.name)
            arch = BY_NAME.get(arch.base)
        for key in keys:
            if key in self._files:
                return self._files[key], key
        default = self._files.get(DEFAULT_KEY)
        firmware = firmware_of_code(code)
        if default is not None and (firmware == "unknown"
                                    or firmware_of_file(default) in (None, firmware)):
            return default, DEFAULT_KEY  # an unassigned code: SPEC DHCP-05's fallback
        return None

    def decide(self, facts: ClientFacts) -> BootDecision:
        """The answer for one client."""
        arch = BY_CODE.get(facts.arch) if facts.arch is not None else None
        if arch is not None:
            name = arch.name
        elif facts.arch is None:
            name = "none"
        else:
            name = f"unknown-{facts.arch}"
        http_client = facts.is_http_client or (arch is not None and arch.http)
        reply_class = "HTTPClient" if http_client else "PXEClient"
        if facts.is_ipxe:
            return BootDecision("http", f"{self._base_url}/pxe/boot.ipxe", self._server,
                                reply_class, name,
                                "iPXE (option 77/175): its boot script over HTTP")
        family = signed.family_of(facts.arch)
        if family is not None:
            loader, why = self.loader(facts.mac)
            second = self._config.shim_second_stage
            if loader == signed.SHIM and http_client:
                url = signed.http_boot_url(self._base_url, facts.mac, second, family)
                return BootDecision("http", url, self._server, "HTTPClient", name,
                                    f"{why}: UEFI HTTP boot of the signed chain (then {second})")
            if loader == signed.SHIM:
                first = signed.first_stage(family, second)
                return BootDecision("tftp", first, self._server, reply_class, name,
                                    f"{why}: the signed chain ({first}, then {second})")
        found = self._file_for(facts.arch, arch)
        if found is None:
            return BootDecision("none", "", self._server, reply_class, name,
                                f"no loader for this architecture: [boot.files] has no "
                                f"{name} (code {facts.arch}) entry and default "
                                f"{self._files.get(DEFAULT_KEY, '(none)')} is not built "
                                f"for it")
        filename, key = found
        why = f"[boot.files] {key}"
        if arch is None and facts.arch is not None:
            why = f"unknown architecture code {facts.arch}: {why}"
        if http_client:
            url = filename if is_url(filename) else f"{self._base_url}/files/{filename}"
            return BootDecision("http", url, self._server, "HTTPClient", name,
                                f"UEFI HTTP boot: {why} as a URL")
        if is_url(filename):
            return BootDecision("http", filename, self._server, reply_class, name, why)
        return BootDecision("tftp", filename, self._server, reply_class, name, why)

    def architectures_without_loader(self) -> list[str]:
        """The names of the listed architectures (:data:`EXPLAINED_CODES`) that get no
        loader, for the start-up log line."""
        return [BY_CODE[code].name for code in EXPLAINED_CODES
                if self._file_for(code, BY_CODE[code]) is None]

    def files_not_found(self, folders: tuple[Path, ...]) -> list[str]:
        """The ``[boot.files]`` entries (``key = file``) naming a TFTP file that is in
        none of ``folders`` (the TFTP root, then ``ipxe_dir``), for the start-up log:
        such a client would be sent to a file that does not exist."""
        return [f"{key} = {name}" for key, name in sorted(self._files.items())
                if not is_url(name)
                and not any((folder / name.lstrip("/")).is_file() for folder in folders)]

    def explain(self, mac: str) -> list[dict[str, Any]]:
        """The decision for ``mac`` on every listed architecture, as a plain PXE ROM,
        plus the answer once it runs iPXE (for ``/machines/{mac}/explain``)."""
        rows = [self.decide(ClientFacts(mac, code, "PXEClient")).as_json(code)
                for code in EXPLAINED_CODES]
        rows.append(self.decide(ClientFacts(mac, 0, "PXEClient", is_ipxe=True)).as_json(None))
        rows[-1]["arch"] = "ipxe"
        return rows


#: :attr:`BootPlan.action` values.
ENTRY, EXTERNAL, MENU, LOCAL = "entry", "external", "menu", "local"


@frozen
class BootPlan:
    """What a MAC's boot script does next, and why.

    :ivar action: :data:`ENTRY` (boot ``entry``), :data:`EXTERNAL` (boot what the
        machine source described), :data:`MENU` or :data:`LOCAL`.
    :ivar entry: the catalog entry for :data:`ENTRY`.
    :ivar entry_id: the assigned entry's id, even when it is missing from the catalog.
    :ivar external: the machine source's description for :data:`EXTERNAL`.
    :ivar source: what the machine source said (``answered``, ``not ours``,
        ``no answer: ...``), or ``""`` when none is configured.
    """

    action: str
    reason: str
    entry: EntryView | None = None
    entry_id: str | None = None
    external: ExternalBoot | None = None
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": self.action, "reason": self.reason,
                                "entry": self.entry_id, "machine_source": self.source or None}
        if self.external is not None:
            body["external"] = {"kernel": self.external.kernel,
                                "initrd": list(self.external.initrd),
                                "cmdline": self.external.cmdline,
                                "ipxe_script": bool(self.external.ipxe_script)}
        return body


def plan_boot(entry_id: str | None, entry: EntryView | None, is_local: bool, unknown: str,
              source: SourceAnswer | None = None, source_url: str = "") -> BootPlan:
    """The next boot of one MAC (pure: no I/O, no lifecycle change).

    :param entry_id: the entry the machine's lifecycle says it boots now, or ``None``.
    :param entry: that entry in the catalog, or ``None`` if it is missing.
    :param is_local: the machine was installed or set to local boot.
    :param unknown: ``[boot] unknown`` (``local`` or ``menu``).
    :param source: the machine source's answer for this MAC, ``None`` when no source is
        configured; its answer comes first, anything else falls back to the catalog.
    :param source_url: ``[boot] api_url``, for the reason.
    """
    said = source.outcome if source is not None else ""
    if source is not None and source.outcome == ANSWERED and source.boot is not None:
        return BootPlan(EXTERNAL, f"machine source {source_url}", external=source.boot,
                        source=said)
    prefix = f"machine source {source.outcome}; " if source is not None else ""
    if entry_id is not None:
        if entry is None:
            return BootPlan(LOCAL, f"{prefix}assigned entry {entry_id} is missing; local boot",
                            entry_id=entry_id, source=said)
        return BootPlan(ENTRY, f"{prefix}assigned entry {entry_id}", entry=entry,
                        entry_id=entry_id, source=said)
    if is_local:
        return BootPlan(LOCAL, f"{prefix}installed or set to local: local boot", source=said)
    if unknown == "menu":
        return BootPlan(MENU, f"{prefix}not assigned: menu ([boot] unknown = menu)",
                        source=said)
    return BootPlan(LOCAL, f"{prefix}not assigned: local boot ([boot] unknown = local)",
                    source=said)
