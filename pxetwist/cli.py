"""The ``pxetwist`` command: an operator's client for the JSON API (docs/API.md), on treq.

``pxetwist [--url URL] [--token TOKEN] [--json] COMMAND ...``; the URL and token
also come from ``PXETWIST_URL`` and ``PXETWIST_TOKEN``. Tables by default, JSON
with ``--json``. Any failure (server down, 401, 404, ...) is one line on stderr
and exit status 1; a usage error is argparse's, status 2.

:func:`run` does the work over any treq-like ``http`` object (tests pass
``StubTreq(app.resource())``); :func:`main` runs it under ``task.react``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from pxetwist import csvimport

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds a single request may take (a long poll adds its own wait).
TIMEOUT = 30.0
#: Seconds each long poll of ``events --follow`` waits on the server.
POLL_WAIT = 25
#: Machines asked for per request of ``machines`` (the server pages ``GET /machines``).
MACHINES_PAGE = 1000


class Writer(Protocol):
    """Where output goes (``sys.stdout``, ``io.StringIO``, ...)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class CommandError(Exception):
    """A failure told to the operator as one line (``str()``), exit status 1.

    :ivar answer: the server's JSON answer to a refused request, or ``None``."""

    answer: Any = None


class Api:
    """A small JSON client for one pxetwist server.

    :param url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
    :param token: the bearer token sent with every request (``""``: none).
    :param http: a treq-like object with ``request(method, url, ...)`` returning a
        Deferred response with ``code`` and ``content()``.
    :param reactor: used for request timeouts (``callLater``).
    """

    def __init__(self, url: str, token: str, http: Any, reactor: Any) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = http
        self.reactor = reactor

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Any:
        """Send one request; the decoded JSON answer.

        :raises CommandError: the server is unreachable or answered an error.
        """
        headers = {b"Accept": [b"application/json"]}
        data = None
        if self.token:
            headers[b"Authorization"] = [b"Bearer " + self.token.encode()]
        if body is not None:
            headers[b"Content-Type"] = [b"application/json"]
            data = json.dumps(body).encode()
        try:
            response = await self.http.request(
                method, self.url + path, headers=headers, data=data, params=params,
                reactor=self.reactor, timeout=timeout)
            content = await response.content()
        except (ConnectError, DNSLookupError) as e:
            raise CommandError(f"cannot reach {self.url}: {_reason(e)}") from None
        except (CancelledError, ConnectingCancelledError):
            raise CommandError(f"cannot reach {self.url}: no answer in {timeout:g} s") from None
        except (ResponseNeverReceived, ResponseFailed):
            raise CommandError(f"cannot reach {self.url}: the connection closed "
                               "without a whole answer") from None
        try:
            answer = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if response.code >= 400:
            reason = answer.get("error") if isinstance(answer, dict) else None
            text = reason or content.decode("utf-8", "replace").strip()[:200] or "no reason"
            hint = ""
            if response.code == 401:
                hint = " (give --token or set PXETWIST_TOKEN)"
            error = CommandError(f"{method} {path}: {response.code}: {text}{hint}")
            error.answer = answer
            raise error
        if answer is None:
            raise CommandError(f"{method} {path}: the server's answer is not JSON")
        return answer


def _reason(error: Exception) -> str:
    name = type(error).__name__
    if "Refused" in name:
        return "connection refused"
    if isinstance(error, DNSLookupError):
        return "host name not found"
    text = str(error).strip().rstrip(".")
    return text.split(": ", 1)[-1] if ": " in text else text or name


# -- formatting ---------------------------------------------------------------------------


def when(seconds: float | None, with_date: bool = True) -> str:
    """Local time of an epoch timestamp, ``-`` for none."""
    if not seconds:
        return "-"
    shown = time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S",
                          time.localtime(seconds))
    return shown if with_date else f"{shown}.{int(seconds * 1000) % 1000:03d}"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value).replace("\n", " ")


def table(headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headings, columns padded to their widest cell."""
    cells = [list(headings)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines) + "\n"


def entry_rows(entries: list[dict[str, Any]]) -> list[list[Any]]:
    return [["on" if e.get("pxe") else "off", e.get("id"), e.get("label"), e.get("order"),
             "*" if e.get("default") else "", e.get("kind")] for e in entries]


ENTRY_HEADINGS = ("PXE", "ID", "LABEL", "ORDER", "DEFAULT", "KIND")


def entry_text(entry: dict[str, Any]) -> str:
    keys = ("id", "name", "kind", "pxe", "label", "order", "default", "kernel_args", "file",
            "kernel", "initrd", "cmdline", "size")
    lines = []
    for key in keys + tuple(sorted(set(entry) - set(keys))):
        value = entry.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or None
        lines.append(f"{key + ':':<13}{_cell(value)}")
    return "\n".join(lines) + "\n"


def machine_rows(machines: list[dict[str, Any]]) -> list[list[Any]]:
    return [[m.get("mac"), m.get("state"), m.get("entry"),
             ("once" if m.get("once") else "permanent") if m.get("entry") else "",
             m.get("ip"), m.get("arch"), when(m.get("last_seen")), m.get("last_stage")]
            for m in machines]


MACHINE_HEADINGS = ("MAC", "STATE", "ENTRY", "HOW", "IP", "ARCH", "LAST SEEN", "LAST STAGE")
EVENT_HEADINGS = ("SEQ", "TIME", "MAC", "IP", "STAGE", "DETAIL")


def event_row(event: dict[str, Any]) -> list[Any]:
    return [event.get("seq"), when(event.get("time"), with_date=False), event.get("mac"),
            event.get("ip"), event.get("stage"), event.get("detail")]


def event_line(event: dict[str, Any]) -> str:
    """One event on one line, for ``events --follow``."""
    cells = [_cell(v) for v in event_row(event)]
    return f"{cells[0]:>5}  {cells[1]}  {cells[2]:<17}  {cells[3]:<15}  {cells[4]:<13}  " \
           f"{cells[5]}".rstrip() + "\n"


def explain_text(answer: dict[str, Any]) -> str:
    machine = answer.get("machine") or {}
    entry = answer.get("entry") or {}
    lines = [
        f"mac:       {answer.get('mac')}",
        f"state:     {machine.get('state', 'never seen')}",
        f"decision:  {answer.get('decision')}",
        f"entry:     {_cell(entry.get('id'))}"
        + (f" ({entry.get('kind')}, {entry.get('label')})" if entry else ""),
    ]
    text = "\n".join(lines) + "\n"
    dhcp = answer.get("dhcp") or []
    if dhcp:
        text += "\nDHCP, per architecture:\n" + table(
            ("ARCH", "CODE", "HOW", "FILE", "REASON"),
            [[d.get("arch"), d.get("code"), d.get("how"), d.get("file"), d.get("reason")]
             for d in dhcp])
    script = answer.get("script") or ""
    text += "\nboot.ipxe answer:\n" + "".join("  " + line + "\n"
                                              for line in script.splitlines())
    return text


# -- commands ----------------------------------------------------------------------------


def _path_part(text: str) -> str:
    return quote(text, safe="")


class Commands:
    """One method per subcommand; each writes to ``out`` and returns nothing."""

    def __init__(self, api: Api, out: Writer, as_json: bool) -> None:
        self.api = api
        self.out = out
        self.as_json = as_json

    def _show(self, answer: Any, text: str) -> None:
        if self.as_json:
            self.out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
        else:
            self.out.write(text)

    async def list(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("GET", "/containers")
        text = table(ENTRY_HEADINGS, entry_rows(answer["entries"]))
        for problem in answer.get("errors", []):
            text += f"broken: {problem.get('path')}: {problem.get('error')}\n"
        self._show(answer, text)

    async def show(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("GET", f"/containers/{_path_part(args.id)}/info")
        self._show(answer, entry_text(answer))

    async def toggle(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("POST", f"/pxe/{_path_part(args.id)}/toggle")
        state = "enabled" if answer.get("pxe") else "disabled"
        self._show(answer, f"{answer.get('id')}: PXE {state}\n")

    async def menu_set(self, args: argparse.Namespace) -> None:
        body: dict[str, Any] = {}
        if args.label is not None:
            body["label"] = args.label
        if args.order is not None:
            body["order"] = None if args.order.lower() in ("none", "null", "") else \
                _whole_number(args.order)
        if args.default is not None:
            body["default"] = args.default
        if args.args is not None:
            body["kernel_args"] = args.args
        if args.pxe is not None:
            body["pxe"] = args.pxe
        if not body:
            raise CommandError("menu set: nothing to change (give --label, --order, "
                               "--default, --args or --pxe)")
        answer = await self.api.call("POST", f"/pxe/{_path_part(args.id)}/menu", body)
        self._show(answer, table(ENTRY_HEADINGS, entry_rows([answer])))

    async def refresh(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("POST", "/catalog/refresh")
        self._show(answer, f"catalog: {answer.get('entries')} entries, "
                           f"{answer.get('errors')} broken\n")

    async def machines(self, args: argparse.Namespace) -> None:
        """Every machine, page by page (``GET /machines?limit=&after=``)."""
        machines: list[dict[str, Any]] = []
        after = ""
        while True:
            answer = await self.api.call(
                "GET", f"/machines?limit={MACHINES_PAGE}" + (f"&after={quote(after)}"
                                                             if after else ""))
            machines += answer["machines"]
            after = answer.get("next") or ""
            if not after:
                break
        whole = {"machines": machines, "next": None, "total": len(machines)}
        self._show(whole, table(MACHINE_HEADINGS, machine_rows(machines)))

    async def assign(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("PUT", f"/machines/{_path_part(args.mac)}",
                                     {"entry": args.id, "once": args.once})
        self._show(answer, table(MACHINE_HEADINGS, machine_rows([answer])))

    async def unassign(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("PUT", f"/machines/{_path_part(args.mac)}",
                                     {"entry": None})
        self._show(answer, table(MACHINE_HEADINGS, machine_rows([answer])))

    async def import_csv(self, args: argparse.Namespace) -> None:
        """``import FILE.csv``: every row in one ``POST /machines``, all or nothing."""
        try:
            with open(args.file, encoding="utf-8") as source:
                read = csvimport.read_rows(source.read())
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"import: cannot read {args.file}: {_reason(e)}") from None
        problems = [f"{args.file}:{line}: {why}" for line, why in read.errors]
        if not problems and not read.records:
            raise CommandError(f"import: {args.file} holds no machines")
        if not problems:
            try:
                answer = await self.api.call("POST", "/machines", list(read.records))
            except CommandError as e:
                rows = e.answer.get("rows") if isinstance(e.answer, dict) else None
                if not rows:
                    raise
                problems = [f"{args.file}:{read.lines[row['row']]}: {row['error']}"
                            for row in rows if 0 <= row.get("row", -1) < len(read.lines)]
            else:
                self._show(answer, f"imported {len(answer['machines'])} machines\n"
                           + table(MACHINE_HEADINGS, machine_rows(answer["machines"])))
                return
        raise CommandError("import: nothing was changed:\n" + "\n".join(problems))

    async def installed(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("POST",
                                     f"/api/v1/machines/{_path_part(args.mac)}/installed")
        self._show(answer, table(MACHINE_HEADINGS, machine_rows([answer])))

    async def explain(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("GET", f"/machines/{_path_part(args.mac)}/explain")
        self._show(answer, explain_text(answer))

    async def leases(self, args: argparse.Namespace) -> None:
        answer = await self.api.call("GET", "/leases")
        rows = [[lease.get("ip"), lease.get("mac"), lease.get("state"), lease.get("hostname"),
                 when(lease.get("expires"))] for lease in answer["leases"]]
        self._show(answer, table(("IP", "MAC", "STATE", "HOSTNAME", "EXPIRES"), rows))

    async def events(self, args: argparse.Namespace) -> None:
        params = {"mac": args.mac} if args.mac else {}
        answer = await self.api.call("GET", "/events", params=params)
        if not args.follow:
            self._show(answer, table(EVENT_HEADINGS,
                                     [event_row(e) for e in answer["events"]]))
            return
        shown = 0
        if not self.as_json:
            self.out.write(f"{'SEQ':>5}  {'TIME':<12}  {'MAC':<17}  {'IP':<15}  "
                           f"{'STAGE':<13}  DETAIL\n")
        events, after = answer["events"], answer["last"]
        while True:
            for event in events:
                if args.count is not None and shown >= args.count:
                    return
                self.out.write(json.dumps(event, sort_keys=True) + "\n" if self.as_json
                               else event_line(event))
                shown += 1
            self.out.flush()
            if args.count is not None and shown >= args.count:
                return
            answer = await self.api.call(
                "GET", "/events", params={**params, "after": str(after),
                                          "wait": str(POLL_WAIT)},
                timeout=POLL_WAIT + TIMEOUT)
            events = answer["events"]
            # A restarted server numbers from 1 again: everything it has is new.
            restarted = answer["last"] < after
            after = 0 if restarted else max([after, *(e["seq"] for e in events)])


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"--order must be a whole number or 'none', not {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line: global options, then one subcommand."""
    top = argparse.ArgumentParser(
        prog="pxetwist", description="Manage a pxetwist server over its JSON API.")
    url = os.environ.get("PXETWIST_URL") or DEFAULT_URL
    token = os.environ.get("PXETWIST_TOKEN", "")
    # The global options work before or after the subcommand (``pxetwist list --json``).
    common = argparse.ArgumentParser(add_help=False)
    for where, default in ((top, None), (common, argparse.SUPPRESS)):
        where.add_argument("--url", default=url if default is None else default,
                           help=f"the server's base URL (env PXETWIST_URL; now {url})")
        where.add_argument("--token", default=token if default is None else default,
                           help="the [http] api_token for changes (env PXETWIST_TOKEN)")
        where.add_argument("--json", action="store_true",
                           default=False if default is None else default,
                           help="print the server's JSON answers")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    command("list", "the catalog: entries with PXE flag, label, order and default; "
                    "broken entries")
    command("show", "one catalog entry").add_argument("id", help="the entry id")
    command("toggle", "switch an entry in or out of the PXE menu").add_argument(
        "id", help="the entry id")
    menu = command("menu", "change menu settings")
    menu_sub = menu.add_subparsers(dest="menu_command", metavar="ACTION", required=True)
    menu_set = menu_sub.add_parser(
        "set", parents=[common], help="set an entry's label, order, default or kernel arguments",
        description="Set an entry's menu settings; options not given stay as they are.")
    menu_set.add_argument("id", help="the entry id")
    menu_set.add_argument("--label", help="the menu label")
    menu_set.add_argument("--order", help="position in the menu (a whole number, or 'none')")
    menu_set.add_argument("--default", action=argparse.BooleanOptionalAction, default=None,
                          help="make it the menu's default (or --no-default)")
    menu_set.add_argument("--args", help="extra kernel arguments")
    menu_set.add_argument("--pxe", action=argparse.BooleanOptionalAction, default=None,
                          help="offer it in the menu (or --no-pxe)")
    command("refresh", "rescan the catalog folders now")
    command("machines", "every machine seen: MAC, state, assigned entry, last seen")
    assign = command("assign", "boot a machine into a catalog entry (permanently, or --once "
                               "until it reports installed)")
    assign.add_argument("mac", help="the machine's MAC address")
    assign.add_argument("id", help="the entry id")
    assign.add_argument("--once", action="store_true",
                        help="one-shot: boot it until installed, then boot local")
    command("unassign", "drop a machine's assignment: it boots from its disk").add_argument(
        "mac", help="the machine's MAC address")
    command("import", "assign many machines from a CSV file (mac,hostname,entry,once,"
                      "key=value...), all or nothing").add_argument(
        "file", help="the CSV file")
    command("installed", "tell the server a machine's install is done").add_argument(
        "mac", help="the machine's MAC address")
    command("explain", "what a machine gets at every boot step, and why").add_argument(
        "mac", help="the machine's MAC address")
    command("leases", "the DHCP leases (full mode)")
    events = command("events", "recent boot events; --follow streams new ones until Ctrl-C")
    events.add_argument("--mac", help="only this machine's events")
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new events until Ctrl-C")
    events.add_argument("--count", type=_positive, default=None,
                        help="with --follow: stop after this many events")
    return top


async def run(argv: Sequence[str], http: Any, reactor: Any, out: Writer | None = None,
              err: Writer | None = None) -> int:
    """Parse ``argv``, do the command over ``http``; the exit status.

    :raises SystemExit: for usage errors and ``--help`` (argparse).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = parser().parse_args(list(argv))
    api = Api(args.url, args.token, http, reactor)
    commands = Commands(api, out, args.json)
    name = {"menu": "menu_set", "import": "import_csv"}.get(args.command, args.command)
    try:
        await getattr(commands, name)(args)
    except CommandError as e:
        out.flush()
        err.write(f"pxetwist: {e}\n")
        return 1
    return 0


class _QuietWhenStopping:
    """stderr, silent once the process is stopping."""

    def __init__(self, stream: Writer, stopping: list[bool]) -> None:
        self._stream = stream
        self._stopping = stopping

    def write(self, text: str) -> int:
        return 0 if self._stopping else self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run under ``task.react`` with the real reactor and treq."""
    from treq.client import HTTPClient
    from twisted.internet import task
    from twisted.web.client import Agent

    arguments = list(sys.argv[1:] if argv is None else argv)

    def start(reactor: Any) -> Deferred[None]:
        http = HTTPClient(Agent(reactor))
        stopping: list[bool] = []
        # Ctrl-C (or SIGTERM) stops the reactor and cuts the open request: that is the
        # normal end of `events --follow`, not an error to report.
        reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
        err = _QuietWhenStopping(sys.stderr, stopping)

        async def go() -> None:
            code = await run(arguments, http, reactor, err=err)
            if code and not stopping:
                raise SystemExit(code)

        return ensureDeferred(go())

    task.react(start)


if __name__ == "__main__":
    main()
