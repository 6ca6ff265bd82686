"""The catalog: what machines can boot, found by scanning folders.

An entry is either a folder holding ``entry.ini`` (section ``[entry]``) or a
lone file whose kind follows from its suffix. Operators' choices about entries
(offered in the menu or not, label, order, default, extra kernel arguments)
live in the store, keyed by the entry's id, so they survive rescans and
restarts. Scanning touches the disk, so it runs in a thread; the result is
swapped in whole on the reactor thread.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attrs import evolve, frozen
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pxetwist import templates
from pxetwist.config import CatalogConfig
from pxetwist.store import SettingRow, Store

KINDS: tuple[str, ...] = ("linux", "ipxe", "efi", "iso", "file")
ENTRY_FILE = "entry.ini"
ENTRY_KEYS: tuple[str, ...] = ("name", "kind", "kernel", "initrd", "cmdline", "file")
SUFFIX_KINDS: dict[str, str] = {".ipxe": "ipxe", ".efi": "efi", ".iso": "iso"}


@frozen
class CatalogEntry:
    """One bootable thing found on disk.

    :ivar id: stable slug of the path relative to its catalog folder.
    :ivar kind: ``linux``, ``ipxe``, ``efi``, ``iso`` or ``file``.
    :ivar folder: the folder whose files ``/containers/{id}/files/{name}`` serves
        (the entry's own folder, or the folder holding a lone file).
    :ivar file: for non-linux kinds, the main file (a name in ``folder``, or a URL);
        ``""`` for linux.
    :ivar kernel: linux only: a name in ``folder`` or a URL.
    :ivar initrd: linux only: names in ``folder`` or URLs, in load order.
    :ivar cmdline: linux only: the kernel command line the entry itself asks for.
    :ivar size: bytes of the main local file (kernel for linux), 0 for URLs.
    :ivar vars: ``entry.ini``'s ``[vars]`` (name, value) pairs, for its templates.
    :ivar templates: the file names in the entry folder's ``templates/`` (rendered per
        machine by :mod:`pxetwist.templates`).
    """

    id: str
    name: str
    kind: str
    folder: Path
    file: str = ""
    kernel: str = ""
    initrd: tuple[str, ...] = ()
    cmdline: str = ""
    size: int = 0
    vars: tuple[tuple[str, str], ...] = ()
    templates: tuple[str, ...] = ()

    @property
    def main_path(self) -> Path | None:
        """The local file that ``GET /containers/{id}`` serves, or ``None`` for a URL."""
        name = self.kernel if self.kind == "linux" else self.file
        if not name or is_url(name):
            return None
        return self.folder / name

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "file": self.file,
            "kernel": self.kernel,
            "initrd": list(self.initrd),
            "cmdline": self.cmdline,
            "size": self.size,
            "vars": dict(self.vars),
            "templates": list(self.templates),
        }


@frozen
class CatalogProblem:
    """An entry that could not be read, or a part of one that cannot be used (a
    ``cmdline`` argument iPXE cannot be given); shown by ``GET /containers`` (``errors``)
    and the web page, and logged at warn.

    :ivar path: the file at fault (an ``entry.ini`` or a lone file).
    :ivar key: the ``[entry]`` key at fault, or ``""``.
    """

    path: Path
    key: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"path": str(self.path), "key": self.key, "error": self.message}


@frozen
class EntryView:
    """An entry together with the operator's settings for it: what the menu and API show.

    :ivar order: menu position; entries without one follow, by label.
    """

    entry: CatalogEntry
    pxe: bool
    label: str
    order: int | None
    default: bool
    kernel_args: str

    def as_json(self) -> dict[str, Any]:
        body = self.entry.as_json()
        body.update(
            pxe=self.pxe,
            label=self.label,
            order=self.order,
            default=self.default,
            kernel_args=self.kernel_args,
        )
        return body


@frozen
class ScanResult:
    """What one scan found: entries by id, and the problems met."""

    entries: dict[str, CatalogEntry]
    problems: tuple[CatalogProblem, ...]


def is_url(text: str) -> bool:
    """Whether an entry value points at a mirror instead of a file beside it."""
    return text.startswith(("http://", "https://"))


def slugify(relative: str) -> str:
    """The id of an entry: its relative path, lower-cased, runs of other characters as ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", relative.lower()).strip("-")
    return slug or "entry"


class _EntryError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _local_name(folder: Path, key: str, value: str) -> str:
    """Check that a file named in ``entry.ini`` is a plain file inside the entry's folder."""
    if is_url(value):
        return value
    if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
        raise _EntryError(key, f"{value!r} must be a file name in the entry's folder or a URL")
    path = folder / value
    if not path.is_file():
        raise _EntryError(key, f"file {value!r} not found in {folder}")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise _EntryError(key, f"{value!r} leaves the entry's folder")
    return value


def _read_folder_entry(entry_id: str, folder: Path) -> CatalogEntry:
    ini = folder / ENTRY_FILE
    parser = configparser.RawConfigParser(
        delimiters=("=",), comment_prefixes=(";", "#"), inline_comment_prefixes=(";", "#"),
        interpolation=None,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # [vars] keep case
    try:
        parser.read_string(ini.read_text(encoding="utf-8"), source=str(ini))
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise _EntryError("", str(e).splitlines()[0]) from None
    if "entry" not in parser.sections() or set(parser.sections()) - {"entry", "vars"}:
        raise _EntryError("", "must hold an [entry] section (and optionally [vars]), no other")
    values = {key.lower(): value for key, value in parser.items("entry")}
    variables = tuple(parser.items("vars")) if parser.has_section("vars") else ()
    names = templates.template_names(folder)
    for key in values:
        if key not in ENTRY_KEYS:
            raise _EntryError(key, "unknown key")
    kind = values.get("kind", "linux" if "kernel" in values else "").strip().lower()
    if kind not in KINDS:
        raise _EntryError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    name = values.get("name", "").strip() or folder.name
    if kind == "linux":
        kernel = values.get("kernel", "").strip()
        if not kernel:
            raise _EntryError("kernel", "a linux entry needs a kernel")
        kernel = _local_name(folder, "kernel", kernel)
        initrd = tuple(
            _local_name(folder, "initrd", part.strip())
            for part in values.get("initrd", "").split(",")
            if part.strip()
        )
        for key in ("file",):
            if values.get(key, "").strip():
                raise _EntryError(key, "not used by a linux entry (use kernel and initrd)")
        size = 0 if is_url(kernel) else (folder / kernel).stat().st_size
        return CatalogEntry(
            entry_id, name, kind, folder, kernel=kernel, initrd=initrd,
            cmdline=values.get("cmdline", "").strip(), size=size, vars=variables, templates=names,
        )
    file = values.get("file", "").strip()
    if not file:
        raise _EntryError("file", f"a {kind} entry needs a file")
    file = _local_name(folder, "file", file)
    for key in ("kernel", "initrd", "cmdline"):
        if values.get(key, "").strip():
            raise _EntryError(key, f"only linux entries take {key}")
    size = 0 if is_url(file) else (folder / file).stat().st_size
    return CatalogEntry(entry_id, name, kind, folder, file=file, size=size,
                        vars=variables, templates=names)


def _lone_file_entry(entry_id: str, path: Path) -> CatalogEntry:
    kind = SUFFIX_KINDS.get(path.suffix.lower(), "file")
    return CatalogEntry(
        entry_id, path.name, kind, path.parent, file=path.name, size=path.stat().st_size
    )


def scan(paths: Iterable[Path]) -> ScanResult:
    """Find every entry below ``paths`` (blocking: run it in a thread).

    Hidden files and folders are skipped; a folder without ``entry.ini`` is a
    group whose contents are entries in turn. Symlinks that leave a catalog
    folder are skipped. Ids are unique: when two paths slug alike, the later
    one (in sorted order) gets a short hash of its path appended.
    """
    found: list[tuple[str, Path, bool]] = []  # (relative, path, is_folder_entry)
    problems: list[CatalogProblem] = []
    for root in paths:
        root_real = root.resolve()
        for current, dirs, files in os.walk(root, followlinks=False):
            here = Path(current)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if here != root and (here / ENTRY_FILE).is_file():
                found.append((str(here.relative_to(root)), here, True))
                dirs[:] = []
                continue
            for name in sorted(files):
                path = here / name
                if name.startswith(".") or not path.is_file():
                    continue
                if not path.resolve().is_relative_to(root_real):
                    problems.append(CatalogProblem(path, "", "symlink leaves the catalog folder"))
                    continue
                found.append((str(path.relative_to(root)), path, False))
    entries: dict[str, CatalogEntry] = {}
    for relative, path, is_folder in sorted(found, key=lambda item: (item[0], str(item[1]))):
        entry_id = slugify(relative)
        if entry_id in entries:
            entry_id += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:6]
        try:
            if is_folder:
                entry = entries[entry_id] = _read_folder_entry(entry_id, path)
                problems.extend(
                    CatalogProblem(path / (ENTRY_FILE if key == "cmdline" else key), key, why)
                    for key, why in templates.syntax_problems(path, entry.cmdline))
            else:
                entries[entry_id] = _lone_file_entry(entry_id, path)
        except _EntryError as e:
            problems.append(CatalogProblem(path / ENTRY_FILE if is_folder else path, e.key,
                                           e.message))
        except OSError as e:
            problems.append(CatalogProblem(path, "", e.strerror or str(e)))
    return ScanResult(entries, tuple(problems))


class CatalogService(MultiService):
    """The catalog as the rest of pxetwist sees it: entries, settings and menu order.

    Rescans on :meth:`refresh`, on a timer (``rescan_interval``) and, where
    inotify exists, shortly after files change below a catalog folder.

    :ivar entries: the entries of the last scan, by id.
    :ivar problems: what the last scan could not read.
    """

    _log = Logger()

    def __init__(self, config: CatalogConfig, store: Store, reactor: Any) -> None:
        super().__init__()
        self.setName("catalog")
        self._config = config
        self._store = store
        self._reactor = reactor
        self.entries: dict[str, CatalogEntry] = {}
        self.problems: tuple[CatalogProblem, ...] = ()
        self._settings: dict[str, SettingRow] = {}
        self._listeners: list[Callable[[], object]] = []
        self._inotify: Any = None
        self._pending_change: Any = None
        if config.rescan_interval > 0:
            timer = TimerService(config.rescan_interval, self.refresh)
            timer.clock = reactor
            timer.setServiceParent(self)

    # -- scanning --------------------------------------------------------------------

    def load(self) -> None:
        """Scan and read settings at once, in this thread (startup, before serving)."""
        self._settings = self._store.settings_now()
        self._apply(scan(self._config.paths))

    def refresh(self) -> Deferred[None]:
        """Rescan the catalog folders in a thread and swap the result in."""
        d: Deferred[ScanResult]
        if IReactorThreads.providedBy(self._reactor):
            d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), scan,
                                  self._config.paths)
        else:
            d = maybeDeferred(scan, self._config.paths)
        applied = d.addCallback(self._apply)
        applied.addErrback(lambda f: self._log.failure("catalog rescan failed", f))
        return applied

    def _apply(self, result: ScanResult) -> None:
        added = result.entries.keys() - self.entries.keys()
        removed = self.entries.keys() - result.entries.keys()
        for problem in result.problems:
            if problem not in self.problems:
                self._log.warn("catalog: skipped {path}: {key} {error}", path=problem.path,
                               key=problem.key or "-", error=problem.message)
        if added or removed:
            self._log.info("catalog: {count} entries ({added} new, {removed} gone)",
                           count=len(result.entries), added=len(added), removed=len(removed))
        self.entries = result.entries
        self.problems = result.problems
        for listener in list(self._listeners):
            listener()

    def settings_changed(self, settings: dict[str, SettingRow]) -> None:
        """Another server sharing the state changed the settings: take these."""
        self._settings = settings
        for listener in list(self._listeners):
            listener()

    def on_change(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after every scan (e.g. to invalidate cached scripts)."""
        self._listeners.append(listener)

    def startService(self) -> None:
        self.load()
        super().startService()
        self._watch()

    def stopService(self) -> Deferred[None] | None:
        if self._inotify is not None:
            self._inotify.stopReading()
            self._inotify.loseConnection()
            self._inotify = None
        if self._pending_change is not None and self._pending_change.active():
            self._pending_change.cancel()
        return super().stopService()

    def _watch(self) -> None:
        try:
            from twisted.internet import inotify
        except ImportError:
            return
        if not IReactorThreads.providedBy(self._reactor):
            return
        try:
            notifier = inotify.INotify(reactor=self._reactor)
            notifier.startReading()
            for path in self._config.paths:
                notifier.watch(FilePath(str(path)), autoAdd=True, recursive=True,
                               callbacks=[self._changed])
        except Exception:
            self._log.failure("catalog: inotify unavailable; relying on the rescan timer")
            return
        self._inotify = notifier

    def _changed(self, *_: object) -> None:
        self.rescan_soon()

    def rescan_soon(self) -> None:
        """Rescan shortly (a file changed or was found missing); a burst of calls (a copy
        writes many files, clients retry a vanished one) coalesces into one rescan."""
        if self._pending_change is not None and self._pending_change.active():
            self._pending_change.reset(0.5)
            return
        self._pending_change = self._reactor.callLater(0.5, self.refresh)

    # -- settings and the menu -------------------------------------------------------

    def view(self, entry_id: str) -> EntryView | None:
        """One entry with its settings, or ``None`` if no such entry."""
        entry = self.entries.get(entry_id)
        if entry is None:
            return None
        setting = self._settings.get(entry_id)
        if setting is None:
            setting = SettingRow(entry_id, None, None, None, False, None)
        return EntryView(
            entry=entry,
            pxe=self._config.pxe_default if setting.pxe is None else setting.pxe,
            label=setting.label or entry.name,
            order=setting.position,
            default=setting.is_default,
            kernel_args=setting.kernel_args or "",
        )

    def views(self) -> list[EntryView]:
        """Every entry in menu order: by ``order`` (unset last), then label, then id."""
        views = [v for v in (self.view(i) for i in self.entries) if v is not None]
        return sorted(views, key=lambda v: (v.order is None, v.order or 0, v.label.lower(),
                                            v.entry.id))

    def menu(self) -> list[EntryView]:
        """The PXE-enabled entries, in menu order."""
        return [v for v in self.views() if v.pxe]

    def default_entry(self) -> EntryView | None:
        """The menu's default: the entry marked default if offered, else the first offered."""
        menu = self.menu()
        for view in menu:
            if view.default:
                return view
        return menu[0] if menu else None

    def set_pxe(self, entry_id: str, enabled: bool) -> Deferred[None]:
        """Offer an entry in the menu or not (kept in the store)."""
        return self._update(entry_id, pxe=enabled)

    @inlineCallbacks
    def toggle(self, entry_id: str) -> Any:
        """Flip an entry's PXE flag. :returns: a Deferred firing with the new flag."""
        view = self.view(entry_id)
        if view is None:
            raise KeyError(entry_id)
        yield self.set_pxe(entry_id, not view.pxe)
        return not view.pxe

    def set_menu(
        self,
        entry_id: str,
        label: str | None = None,
        order: int | None = None,
        default: bool | None = None,
        kernel_args: str | None = None,
        clear_order: bool = False,
    ) -> Deferred[None]:
        """Change an entry's menu settings; ``None`` leaves a value as it is.

        An empty label or kernel_args resets it; ``clear_order`` drops the explicit
        order (the entry sorts by name again); ``default=True`` clears the flag on
        every other entry in the same transaction.
        """
        changes: dict[str, Any] = {}
        if label is not None:
            changes["label"] = label or None
        if clear_order:
            changes["position"] = None
        elif order is not None:
            changes["position"] = order
        if default is not None:
            changes["is_default"] = default
        if kernel_args is not None:
            changes["kernel_args"] = kernel_args or None
        return self._update(entry_id, **changes)

    def _update(self, entry_id: str, **changes: Any) -> Deferred[None]:
        if entry_id not in self.entries:
            raise KeyError(entry_id)
        current = self._settings.get(entry_id) or SettingRow(entry_id, None, None, None,
                                                             False, None)
        updated = evolve(current, **changes)
        make_only_default = bool(changes.get("is_default"))
        d = self._store.put_setting(updated, clear_other_defaults=make_only_default)

        def stored(_: object) -> None:
            if make_only_default:
                for key, row in list(self._settings.items()):
                    if row.is_default:
                        self._settings[key] = evolve(row, is_default=False)
            self._settings[entry_id] = updated

        d.addCallback(stored)
        return d
