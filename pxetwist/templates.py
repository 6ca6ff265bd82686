"""Per-machine templates: an entry's ``templates/`` files and its templated ``cmdline``.

Every file in a catalog entry's ``templates/`` folder is a Jinja2 template (a Debian
preseed, cloud-init ``user-data``/``meta-data``, a kickstart, an Ignition config...),
rendered per machine in Jinja's sandbox (:class:`jinja2.sandbox.SandboxedEnvironment`)
with :class:`jinja2.StrictUndefined`: a template that names a variable the machine does
not have, reaches for Python internals or includes a file outside its folder fails with
one line saying why, and nothing half-rendered is ever served.

The variables (:func:`machine_variables`): ``mac``, ``mac_hyphen``, ``ip``, ``hostname``,
``arch``, ``uuid``, ``entry`` (``id``, ``name``, ``kind``), ``server``, ``files_url``,
``templates_url``, ``installed_url`` and ``vars`` (the entry's ``[vars]`` merged with the
machine's own, the machine's winning). A value pxetwist does not know for this machine
(no hostname given, never assigned so no callback, no address yet) is left undefined, so
a template that needs it fails loudly unless it says ``{{ hostname | default('node') }}``.

``entry.ini``'s ``cmdline`` is rendered with the same variables by
:func:`kernel_arguments` (the one function iPXE scripts and GRUB configs both call), and
then read as the operator's text (:mod:`pxetwist.cmdline`: a ``${...}`` written in
``entry.ini`` stays an iPXE setting). What a variable puts into a command line can never
be iPXE syntax: a value holding ``${`` or a control character is refused there.

This module reads entry folders, never the catalog's state: the catalog calls
:func:`syntax_problems` while scanning, the HTTP app :class:`TemplateRenderer`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2.sandbox import SandboxedEnvironment

from pxetwist import cmdline

if TYPE_CHECKING:
    from pxetwist.catalog import CatalogEntry, EntryView

#: The folder of an entry that holds its templates.
TEMPLATES_DIR = "templates"
#: Render failures remembered for ``GET /containers`` (the newest kept).
MAX_ERRORS = 200
#: Largest template file rendered (bytes).
MAX_TEMPLATE = 1024 * 1024

_MARKUP = re.compile(r"\{\{|\{%|\{#")
_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_STATEMENT = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TemplateRenderError(Exception):
    """A template or templated ``cmdline`` that cannot be rendered for a machine;
    ``str()`` is one line for the operator (served as ``500 {"error": ...}``)."""


@frozen
class MachineFacts:
    """What pxetwist knows of one machine, for its templates (``""``: unknown).

    :ivar vars: the machine's own variables (from ``PUT /machines``), as pairs.
    :ivar installed_url: its callback URL, ``""`` if it was never assigned.
    """

    mac: str
    ip: str = ""
    hostname: str = ""
    arch: str = ""
    uuid: str = ""
    vars: tuple[tuple[str, str], ...] = ()
    installed_url: str = ""


def is_templated(text: str) -> bool:
    """Whether ``text`` holds Jinja markup (``{{``, ``{%`` or ``{#``)."""
    return _MARKUP.search(text) is not None


def machine_variables(base_url: str, entry: CatalogEntry, facts: MachineFacts | None
                      ) -> dict[str, Any]:
    """The variables of ``entry``'s templates for one machine (``facts``; ``None`` when the
    request named no machine: only the entry's and the server's variables exist)."""
    merged = dict(entry.vars)
    variables: dict[str, Any] = {
        "entry": {"id": entry.id, "name": entry.name, "kind": entry.kind},
        "server": base_url,
        "files_url": f"{base_url}/containers/{entry.id}/files/",
        "vars": merged,
    }
    if facts is None:
        return variables
    merged.update(facts.vars)
    hyphen = facts.mac.replace(":", "-")
    variables.update(mac=facts.mac, mac_hyphen=hyphen,
                     templates_url=f"{base_url}/machines/{hyphen}/templates/")
    known = {"ip": facts.ip, "hostname": facts.hostname, "arch": facts.arch,
             "uuid": facts.uuid, "installed_url": facts.installed_url}
    variables.update({name: value for name, value in known.items() if value})
    return variables


def template_names(folder: Path) -> tuple[str, ...]:
    """The templates of the entry folder ``folder`` (file names in its ``templates/``
    folder, hidden ones aside), sorted; blocking, for the catalog's scan."""
    try:
        return tuple(sorted(p.name for p in (folder / TEMPLATES_DIR).iterdir()
                            if p.is_file() and not p.name.startswith(".")))
    except OSError:
        return ()


def syntax_problems(folder: Path, command_line: str) -> list[tuple[str, str]]:
    """What a scan can already see wrong in an entry folder: ``(key, message)`` for each
    template (key ``templates/NAME``) or ``cmdline`` that Jinja cannot parse, and each
    ``cmdline`` argument iPXE could not be given (its Jinja parts aside)."""
    found: list[tuple[str, str]] = []
    env = _environment(None)
    templates = folder / TEMPLATES_DIR
    if templates.is_dir():
        for path in sorted(templates.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                if path.stat().st_size > MAX_TEMPLATE:
                    raise TemplateRenderError(f"larger than {MAX_TEMPLATE} bytes")
                env.parse(path.read_text("utf-8"))
            except TemplateSyntaxError as e:
                found.append((f"{TEMPLATES_DIR}/{path.name}", f"line {e.lineno}: {e.message}"))
            except (OSError, UnicodeDecodeError, TemplateRenderError) as e:
                found.append((f"{TEMPLATES_DIR}/{path.name}", str(e)))
    if is_templated(command_line):
        try:
            env.parse(command_line)
        except TemplateSyntaxError as e:
            found.append(("cmdline", f"template: {e.message}"))
    plain = _STATEMENT.sub("", _EXPRESSION.sub("x", command_line))
    found.extend(("cmdline", f"{why}; left out of the kernel line")
                 for why in cmdline.problems(plain, settings_allowed=True))
    return found


def render_cmdline(entry: CatalogEntry, variables: Mapping[str, Any]) -> str:
    """``entry``'s ``cmdline`` rendered for a machine.

    :raises TemplateRenderError: the template fails, or a variable's value would put
        iPXE syntax (``${``) or a control character on the kernel line.
    """
    if not is_templated(entry.cmdline):
        return entry.cmdline
    try:
        return _CMDLINE_ENV.from_string(entry.cmdline).render(variables)
    except Exception as e:  # whatever the operator's template does, one clean error
        raise TemplateRenderError(f"{entry.id} cmdline: {_reason(e)}") from None


def kernel_arguments(view: EntryView, variables: Mapping[str, Any]) -> tuple[list[str],
                                                                              list[str]]:
    """The kernel arguments of one machine's boot of ``view``: ``(arguments, problems)``.

    The entry's ``cmdline`` rendered (:func:`render_cmdline`) and read as the operator's
    text (a ``${...}`` written in ``entry.ini`` is kept, an iPXE setting), then the
    operator's API-set ``kernel_args`` (literal). An argument that cannot be written
    is left out and named in ``problems``. The iPXE script and the GRUB config both write
    exactly these (iPXE adds its ``initrd=``).

    :raises TemplateRenderError: when the ``cmdline`` cannot be rendered.
    """
    entry_args, entry_problems = cmdline.kernel_args(render_cmdline(view.entry, variables),
                                                     settings_allowed=True)
    api_args, api_problems = cmdline.kernel_args(view.kernel_args, settings_allowed=False)
    return entry_args + api_args, entry_problems + api_problems


class TemplateRenderer:
    """Renders entries' template files, and remembers the last failures (per entry and
    template) for ``GET /containers``'s ``errors`` until they render again."""

    def __init__(self) -> None:
        self._environments: dict[Path, SandboxedEnvironment] = {}
        self._errors: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    def render(self, entry: CatalogEntry, name: str, variables: Mapping[str, Any]) -> str:
        """The template ``name`` of ``entry``, rendered.

        :raises TemplateNotFound: no such template (a plain file name in ``templates/``).
        :raises TemplateRenderError: it cannot be rendered (the reason is remembered).
        """
        folder = entry.folder / TEMPLATES_DIR
        if name not in entry.templates:
            raise TemplateNotFound(name)
        env = self._environments.get(folder)
        if env is None:
            env = self._environments[folder] = _environment(folder)
        try:
            if (folder / name).stat().st_size > MAX_TEMPLATE:
                raise TemplateRenderError(f"larger than {MAX_TEMPLATE} bytes")
            text = env.get_template(name).render(variables)
        except Exception as e:  # whatever the operator's template does, one clean error
            reason = f"{entry.id} {TEMPLATES_DIR}/{name}: {_reason(e)}"
            self.failed(entry, f"{TEMPLATES_DIR}/{name}", reason)
            raise TemplateRenderError(reason) from None
        self.succeeded(entry, f"{TEMPLATES_DIR}/{name}")
        return text

    def failed(self, entry: CatalogEntry, key: str, reason: str) -> None:
        """Remember that ``key`` (``cmdline`` or ``templates/NAME``) of ``entry`` failed."""
        self._errors[(entry.id, key)] = (str(entry.folder / key), reason)
        self._errors.move_to_end((entry.id, key))
        while len(self._errors) > MAX_ERRORS:
            self._errors.popitem(last=False)

    def succeeded(self, entry: CatalogEntry, key: str) -> None:
        """Forget an earlier failure of ``key`` of ``entry``."""
        self._errors.pop((entry.id, key), None)

    def problems(self) -> list[dict[str, str]]:
        """The remembered failures, as ``GET /containers`` lists errors."""
        return [{"path": path, "key": key, "error": reason}
                for (_, key), (path, reason) in self._errors.items()]


def _reason(error: Exception) -> str:
    if isinstance(error, TemplateSyntaxError):
        return f"line {error.lineno}: {error.message}"
    if isinstance(error, TemplateNotFound):
        return f"no template {error.name!r} in its {TEMPLATES_DIR}/ folder"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _environment(folder: Path | None, finalize: Any = None) -> SandboxedEnvironment:
    """The sandbox templates render in: undefined names are errors, nothing is escaped
    (these are config files, not HTML), trailing newlines are kept; ``{% include %}``
    reaches only the same ``templates/`` folder."""
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(folder)) if folder is not None else None,
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        auto_reload=True, finalize=finalize)


def _cmdline_value(value: Any) -> Any:
    """Every ``{{ ... }}`` value on a kernel command line: never iPXE syntax."""
    text = "" if value is None else str(value)
    if "${" in text:
        raise TemplateRenderError(f"value {text[:60]!r} holds '${{', which iPXE would expand")
    if _CONTROL.search(text):
        raise TemplateRenderError(f"value {text[:60]!r} holds a control character")
    return value


#: The environment of templated kernel command lines.
_CMDLINE_ENV = _environment(None, finalize=_cmdline_value)
