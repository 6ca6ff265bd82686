"""Unattended installs over HTTP: per-machine templates and templated kernel lines, machine
hostnames and variables, bulk assignment.

:class:`Unattended` joins what :mod:`pxetwist.templates` renders to what the machine
registry knows of a MAC; the routes in :mod:`pxetwist.http.app` call it and write the
answers. Checking of what API callers send about machines (``hostname``, ``vars``, bulk
rows) lives here too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any

from twisted.internet.defer import Deferred

from pxetwist import grub
from pxetwist.catalog import EntryView, is_url
from pxetwist.config import normalise_mac
from pxetwist.http import api, ipxe
from pxetwist.machines import KEEP_LOADER, MachineRegistry
from pxetwist.store import MachineRow
from pxetwist.templates import (
    MachineFacts,
    TemplateRenderer,
    TemplateRenderError,
    is_templated,
    kernel_arguments,
    machine_variables,
    render_cmdline,
)

#: One RFC 1123 label: letters, digits and inner hyphens, 1-63 characters.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VARS = 100
MAX_VAR_VALUE = 4096
#: Rows accepted in one ``POST /machines``.
MAX_ROWS = 10_000


class BulkError(api.BadRequestError):
    """A bulk assignment refused as a whole; ``rows`` says which rows, and why."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(rows)} row(s) refused; nothing was changed")
        self.rows = rows


def check_hostname(text: str) -> str:
    """An RFC 1123 host name or FQDN (labels of letters, digits and inner hyphens, at most
    253 characters; a trailing dot is dropped), or ``""`` to clear it.

    :raises api.BadRequestError: otherwise (so no host name can carry iPXE, shell or
        template syntax into a kernel line or an answer file).
    """
    name = text[:-1] if text.endswith(".") and len(text) > 1 else text
    if name == "":
        return ""
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise api.BadRequestError(
            "hostname must be an RFC 1123 host name (labels of letters, digits and inner "
            "hyphens, 1-63 characters, 253 in all)")
    return name


def check_vars(value: Any) -> dict[str, str]:
    """A machine's template variables: a JSON object of strings, named like identifiers.

    Values may hold anything but NUL (a preseed's shell snippet may need ``$`` or
    quotes); where a value reaches a kernel line, :mod:`pxetwist.templates` refuses it if
    it holds ``${`` or a control character.

    :raises api.BadRequestError: otherwise.
    """
    if not isinstance(value, dict):
        raise api.BadRequestError("vars must be a JSON object of strings")
    if len(value) > MAX_VARS:
        raise api.BadRequestError(f"vars: at most {MAX_VARS} variables")
    for name, text in value.items():
        if not _VAR_NAME.fullmatch(name):
            raise api.BadRequestError(f"vars: {name[:40]!r} is not a variable name "
                                      "(letters, digits, _; not a digit first)")
        if not isinstance(text, str):
            raise api.BadRequestError(f"vars: {name} must be a string")
        if len(text) > MAX_VAR_VALUE or "\0" in text:
            raise api.BadRequestError(f"vars: {name} is longer than {MAX_VAR_VALUE} "
                                      "characters or holds NUL")
    return dict(value)


def machine_data(body: dict[str, Any]) -> tuple[str | None, dict[str, str] | None]:
    """Take ``hostname`` and ``vars`` out of a ``PUT /machines/{mac}`` body (``None``:
    not given, keep the machine's); the rest is the assignment.

    :raises api.BadRequestError: when either is malformed.
    """
    hostname = body.pop("hostname", None)
    variables = body.pop("vars", None)
    if hostname is not None:
        if not isinstance(hostname, str):
            raise api.BadRequestError("hostname must be a string or null")
        hostname = check_hostname(hostname)
    return hostname, (check_vars(variables) if variables is not None else None)


def boot_file_seen(view: EntryView) -> bool:
    """Whether we shall see ``view``'s machine fetch its kernel (or image) from us: not
    when it is on a mirror."""
    entry = view.entry
    return not is_url(entry.kernel if entry.kind == "linux" else entry.file)


@functools.lru_cache(maxsize=512)
def _untemplated_args(view: EntryView) -> tuple[str, ...]:
    """The kernel arguments of an entry whose ``cmdline`` is the same for every machine."""
    return tuple(kernel_arguments(view, {})[0])


class Unattended:
    """Templates and templated kernel lines for the machines of ``machines``.

    :param base_url: the public base URL written into variables.
    :param reservations: ``[dhcp.reservations]``: a reserved address is a machine's ``ip``
        even before it was seen.
    """

    def __init__(self, machines: MachineRegistry, base_url: str,
                 reservations: Mapping[str, IPv4Address]) -> None:
        self._machines = machines
        self._base_url = base_url
        self._reservations = reservations
        self.renderer = TemplateRenderer()

    def facts(self, mac: str | None) -> MachineFacts | None:
        """What templates know of ``mac`` (``None`` for no MAC)."""
        if mac is None:
            return None
        record = self._machines.get(mac)
        reserved = self._reservations.get(mac)
        ip = str(reserved) if reserved is not None else (record.ip if record else "")
        if record is None:
            return MachineFacts(mac, ip=ip)
        return MachineFacts(mac, ip=ip, hostname=record.hostname, arch=record.arch,
                            uuid=record.uuid, vars=record.vars,
                            installed_url=self._machines.installed_url(self._base_url, mac)
                            or "")

    def cmdline_text(self, view: EntryView, mac: str) -> str:
        """``view``'s ``cmdline`` rendered for ``mac`` (as written when not templated).

        :raises TemplateRenderError: it cannot be rendered for ``mac``.
        """
        entry = view.entry
        if not is_templated(entry.cmdline):
            return entry.cmdline
        variables = machine_variables(self._base_url, entry, self.facts(mac))
        try:
            text = render_cmdline(entry, variables)
        except TemplateRenderError as e:
            self.renderer.failed(entry, "cmdline", f"{e} (for {mac})")
            raise
        self.renderer.succeeded(entry, "cmdline")
        return text

    def grub_args(self, view: EntryView, mac: str) -> tuple[list[str], list[str]]:
        """:func:`pxetwist.grub.entry_args` with the ``cmdline`` rendered for ``mac``: the
        GRUB configs' :data:`pxetwist.grub.ArgsFor`.

        :raises TemplateRenderError: see :meth:`cmdline_text`.
        """
        return grub.entry_args(view, mac, self.cmdline_text(view, mac))

    def kernel_args(self, view: EntryView, mac: str | None) -> tuple[str, ...]:
        """``view``'s kernel arguments for ``mac`` (:func:`pxetwist.templates.
        kernel_arguments` over what is known of it): what an iPXE script or a GRUB config
        writes after the kernel (iPXE adds its ``initrd=``).

        :raises TemplateRenderError: the ``cmdline`` cannot be rendered for ``mac`` (the
            reason is kept for ``GET /containers``).
        """
        entry = view.entry
        if not is_templated(entry.cmdline):
            return _untemplated_args(view)
        variables = machine_variables(self._base_url, entry, self.facts(mac))
        try:
            args, _ = kernel_arguments(view, variables)
        except TemplateRenderError as e:
            self.renderer.failed(entry, "cmdline", f"{e} (for {mac or 'a request without MAC'})")
            raise
        self.renderer.succeeded(entry, "cmdline")
        return tuple(args)

    def entry_script(self, view: EntryView, mac: str | None) -> str:
        """``view``'s iPXE script for ``mac``, its ``cmdline`` rendered for it.

        :raises TemplateRenderError: see :meth:`kernel_args`.
        """
        if view.entry.kind != "linux":
            return ipxe.entry_script(self._base_url, view)
        return ipxe.entry_script(self._base_url, view, self.kernel_args(view, mac))

    def render(self, mac: str, name: str, view_of: Callable[[str], EntryView | None]
               ) -> tuple[str, str]:
        """``(entry id, text)``: the template ``name`` of ``mac``'s current entry, rendered.

        :raises api.ApiError: 404 when the machine has no entry or it no such template.
        :raises TemplateRenderError: when it cannot be rendered.
        """
        record = self._machines.get(mac)
        if record is None or record.entry is None:
            raise api.ApiError(f"machine {mac} has no entry assigned", 404)
        view = view_of(record.entry)
        if view is None:
            raise api.ApiError(f"entry {record.entry!r} of {mac} is not in the catalog", 404)
        entry = view.entry
        if name not in entry.templates:
            raise api.ApiError(f"entry {entry.id!r} has no template {name!r}", 404)
        variables = machine_variables(self._base_url, entry, self.facts(mac))
        return entry.id, self.renderer.render(entry, name, variables)

    def template_links(self, record: MachineRow | None,
                       view_of: Callable[[str], EntryView | None]) -> dict[str, str]:
        """Template name -> its URL for this machine (its current entry's templates)."""
        if record is None or record.entry is None:
            return {}
        view = view_of(record.entry)
        if view is None:
            return {}
        folder = f"{self._base_url}/machines/{record.mac.replace(':', '-')}/templates/"
        return {name: folder + name for name in view.entry.templates}

    def assign_many(self, value: Any, view_of: Callable[[str], EntryView | None]
                    ) -> Deferred[list[MachineRow]]:
        """Check every row of a ``POST /machines`` body, then assign them all in one
        transaction.

        :raises BulkError: naming every bad row (nothing is changed then).
        :raises api.BadRequestError: the body is not a list of objects.
        """
        if isinstance(value, dict) and set(value) == {"machines"}:
            value = value["machines"]
        if not isinstance(value, list) or not value:
            raise api.BadRequestError('body must be a non-empty JSON list of machines (or '
                                      '{"machines": [...]})')
        if len(value) > MAX_ROWS:
            raise api.BadRequestError(f"at most {MAX_ROWS} machines at once")
        rows: list[tuple[str, str | None, bool, str | None, dict[str, str] | None,
                         str | None]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, row in enumerate(value):
            given = row.get("mac") if isinstance(row, dict) else None
            try:
                if not isinstance(row, dict):
                    raise api.BadRequestError("a row must be a JSON object")
                body = dict(row)
                mac_text = body.pop("mac", None)
                mac = normalise_mac(mac_text) if isinstance(mac_text, str) else None
                if mac is None:
                    raise api.BadRequestError("mac is required (a MAC address)")
                if mac in seen:
                    raise api.BadRequestError(f"{mac} is listed twice")
                seen.add(mac)
                hostname, variables = machine_data(body)
                loader_given, loader = api.loader_change(body)
                entry, once = api.assignment(body)
                if entry is not None and view_of(entry) is None:
                    raise api.BadRequestError(f"no entry {entry!r}")
                rows.append((mac, entry, once, hostname, variables,
                             loader if loader_given else KEEP_LOADER))
            except api.ApiError as e:
                errors.append({"row": index, "mac": given if isinstance(given, str) else None,
                               "error": str(e)})
        if errors:
            raise BulkError(errors)
        return self._machines.assign_many(rows)
