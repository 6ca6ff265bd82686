"""The Klein application: boot routes for iPXE, file routes, management routes for operators.

One :class:`PxeApp` instance per server, built over the shared catalog,
machines, store and events (no module-level app), so tests can build as many
as they like and serve them with ``StubTreq(app.resource())``. Scripts are
rendered by :mod:`pxetwist.http.ipxe`; JSON request checking lives in
:mod:`pxetwist.http.api`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from klein import Klein
from prometheus_client import generate_latest
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import File, NoRangeStaticProducer
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from pxetwist import __version__, fatimage, signed
from pxetwist.catalog import CatalogService, EntryView, is_url
from pxetwist.chain import explain_chain, image_parts, machine_grub_config, plan_machine
from pxetwist.config import Config
from pxetwist.events import EventBus, Stage
from pxetwist.http import api, ipxe
from pxetwist.http.sendfile import SendfileProducer, can_sendfile
from pxetwist.http.unattended import BulkError, Unattended, boot_file_seen, machine_data
from pxetwist.machine_source import MachineSource, SourceAnswer
from pxetwist.machines import KEEP_LOADER, MachineRegistry, machine_json
from pxetwist.metrics import HTTP_BYTES, HTTP_REQUESTS, HTTP_SECONDS
from pxetwist.paths import PathRefusedError, ResolvedNames, normalise, resolve_inside
from pxetwist.policy import ENTRY, EXTERNAL, MENU, BootPlan
from pxetwist.signed import loader_for
from pxetwist.store import Store
from pxetwist.templates import TemplateRenderError

UI_FOLDER = Path(__file__).resolve().parent / "ui"
#: Bytes read and written at a time when serving a file (per transfer in flight).
FILE_CHUNK = 256 * 1024


def json_body(request: IRequest, body: Any, code: int = 200) -> bytes:
    """Set the status and content type and encode ``body`` as the response."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def script_body(request: IRequest, script: str) -> bytes:
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return script.encode()


class _FileOnly(File):
    """``static.File`` for one regular file (Range, multi-range and HEAD come with it,
    If-Range is added here); never a directory listing.

    Boot files are bytes: ``initrd.gz`` is sent as it is, typed ``application/gzip``,
    never with ``Content-Encoding: gzip`` (``static.File``'s default, which makes curl
    ``--compressed``, python-requests and others unpack it on arrival).
    """

    contentEncodings: dict[str, str] = {}

    def directoryListing(self) -> IResource:
        return notFound("Not found", "No directory listings.")

    def render_GET(self, request: Any) -> Any:
        if_range = request.getHeader(b"if-range")
        if if_range is not None and not _range_still_valid(if_range, self.getModificationTime()):
            request.requestHeaders.removeHeader(b"range")
        return super().render_GET(request)

    def makeProducer(self, request: Any, file_for_reading: Any) -> Any:
        """A whole file on a plain TCP connection goes by ``sendfile``
        (:mod:`pxetwist.http.sendfile`); otherwise (ranges, TLS) Twisted's producer,
        reading :data:`FILE_CHUNK` at a time (its default, 64 KiB, costs ~12% of a large
        file's throughput here: bench/RESULTS.md, HTTP)."""
        producer = super().makeProducer(request, file_for_reading)
        if isinstance(producer, NoRangeStaticProducer) and can_sendfile(request,
                                                                        file_for_reading):
            return SendfileProducer(request, file_for_reading, self.getFileSize())
        producer.bufferSize = FILE_CHUNK
        return producer


def _range_still_valid(if_range: bytes, mtime: float) -> bool:
    """RFC 9110 If-Range: the range applies only if the file is unchanged since the given
    date; we send no ETags, so an entity tag never matches."""
    text = if_range.decode("latin-1").strip()
    if text.startswith(('"', "W/")):
        return False
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    return when >= int(mtime)


class _BootFastPath(Resource):
    """The site's root: the requests every booting machine makes go straight to their
    :class:`PxeApp` methods, everything else through Klein.

    Those are ``GET /pxe/boot.ipxe``, an entry's script (``GET
    /containers/{id}/boot.ipxe``) and its files (``GET``/``HEAD
    /containers/{id}/files/{name}``): four requests a machine, where Klein's routing,
    its Deferred plumbing and the second match that labels the request's metrics cost
    more than the answer (bench/RESULTS.md, HTTP and Boot storm). The routes stay
    declared in Klein, which takes any such path with a ``%`` escape or a non-ASCII
    byte (it decodes them; here a segment is taken as it is). The answers are the
    same; a script goes with a Content-Length instead of chunked.
    """

    isLeaf = True

    def __init__(self, app: PxeApp, routes: IResource) -> None:
        super().__init__()
        self._app = app
        self._routes = routes

    def render(self, request: Any) -> Any:
        method, path = request.method, request.path
        if method == b"GET" and path == b"/pxe/boot.ipxe":
            self._app.measure(request, "/pxe/boot.ipxe")
            answer = self._app.boot_script(request)
            if not isinstance(answer, Deferred):
                return answer
            _answer_later(answer, request)  # a machine source was asked
            return NOT_DONE_YET
        if method in (b"GET", b"HEAD") and path.startswith(b"/containers/") \
                and b"%" not in path and path.isascii():
            parts = path.split(b"/")
            if len(parts) == 5 and parts[3] == b"files" and parts[2] and parts[4]:
                self._app.measure(request, "/containers/<entry_id>/files/<name>")
                answer = self._app.entry_named_file(request, parts[2].decode(),
                                                    parts[4].decode())
                return answer.render(request) if IResource.providedBy(answer) else answer
            if method == b"GET" and len(parts) == 4 and parts[3] == b"boot.ipxe" and parts[2]:
                self._app.measure(request, "/containers/<entry_id>/boot.ipxe")
                return self._app.entry_boot_script(request, parts[2].decode())
        self._app.measure(request)
        return self._routes.render(request)


_log = Logger()


def _answer_later(answer: Deferred[bytes], request: Any) -> None:
    """Write ``answer``'s body when it fires, unless the client has gone meanwhile
    (``notifyFinish`` fails then); a failure is logged with the URL and answered 500."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def write(body: bytes) -> None:
        if not gone and not request.finished:
            request.write(body)
            request.finish()

    def failed(failure: Any) -> None:
        _log.failure("boot script for {uri} failed", failure, uri=request.uri)
        if not gone and not request.finished:
            request.processingFailed(failure)

    answer.addCallbacks(write, failed)


def _serve_file(request: Any, path: str) -> IResource:
    """One file as the answer: the route consumed the whole path (``/files/sub/a``), so
    nothing is left for ``static.File`` to look a child up by."""
    request.postpath = []
    return _FileOnly(path, defaultType="application/octet-stream")


def _names_file(view: EntryView, name: str) -> bool:
    """Whether ``entry.ini`` (or the lone file) names ``name`` as one of the entry's files."""
    entry = view.entry
    return name in (entry.kernel, entry.file, *entry.initrd)


def client_ip(request: IRequest) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", ""))


class PxeApp:
    """The HTTP face of pxetwist.

    :param services: names of the running protocol services, reported by ``/health``.
    :param dhcp_explain: MAC -> the DHCP boot decision per architecture, for
        ``/machines/{mac}/explain`` (``None`` without DHCP).
    :param machine_source: the external machine source (``[boot] api_url``), asked
        first for each MAC's boot script; ``None`` when not configured.
    :param lease_mac: IP -> the MAC holding a current DHCP lease on it, or ``""``: whom an
        HTTP fetch without ``?mac=`` is charged to (``None``: nobody, the IP alone is
        recorded; a NAT or a proxy puts many machines behind one address).
    :param run_in_thread: runs blocking work (building a Secure Boot image) off the
        reactor thread, returning a Deferred; ``None``: at once (tests).
    """

    app = Klein()
    _log = Logger()

    def __init__(
        self,
        config: Config,
        catalog: CatalogService,
        machines: MachineRegistry,
        store: Store,
        events: EventBus,
        base_url: str,
        services: tuple[str, ...] = (),
        dhcp_explain: Callable[[str], list[dict[str, Any]]] | None = None,
        machine_source: MachineSource | None = None,
        lease_mac: Callable[[str], str] | None = None,
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
        unattended: Unattended | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.machines = machines
        self.store = store
        self.events = events
        self.base_url = base_url
        self.services = services
        self.dhcp_explain = dhcp_explain
        self.machine_source = machine_source
        self.lease_mac = lease_mac
        self.run_in_thread = run_in_thread or maybeDeferred
        self.file_folders = (config.tftp.root, config.tftp.ipxe_dir)
        self.resolved = ResolvedNames()
        self.unattended = unattended or Unattended(machines, base_url,
                                                   config.dhcp.reservations)

    def resource(self) -> IResource:
        """The root resource to serve."""
        return _BootFastPath(self, self.app.resource())

    # -- helpers ---------------------------------------------------------------------

    def measure(self, request: Request, route: str | None = None) -> None:
        """Count ``request`` when it finishes: the status sent, the body bytes written and
        the time taken, labelled by the route pattern it matched (``unmatched`` for 404s
        and 405s; ``route`` when the caller knows it), so the label set stays small
        whatever paths clients ask for."""
        clock = self.events.clock
        started = clock.seconds()

        def finished(_: object) -> None:
            pattern = route or self.route_of(request)
            HTTP_REQUESTS.labels(route=pattern, status=str(request.code)).inc()
            HTTP_BYTES.labels(route=pattern).inc(request.sentLength)
            HTTP_SECONDS.labels(route=pattern).observe(clock.seconds() - started)

        request.notifyFinish().addBoth(finished)

    def route_of(self, request: Request) -> str:
        """The pattern of the Klein route ``request`` matches, e.g.
        ``/containers/<entry_id>``; ``unmatched`` if none does."""
        try:
            rule, _ = self.app.url_map.bind("pxetwist").match(
                request.path.decode("latin-1"), method=request.method.decode("latin-1"),
                return_rule=True)
        except HTTPException:
            return "unmatched"
        return str(rule.rule)

    def _mac(self, request: IRequest, text: str | None) -> str | None:
        """The request's MAC (``?mac=`` or path part), normalised; ``None`` if absent."""
        return api.mac_or_none(text)

    def _query(self, request: IRequest, name: str) -> str | None:
        values = request.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else None

    def _plan(self, mac: str, source: SourceAnswer | None) -> BootPlan:
        """What ``mac`` boots next (:func:`pxetwist.policy.plan_boot` over what we know)."""
        return plan_machine(self.machines, self.catalog, self.config.boot, mac, source)

    def _planned(self, mac: str) -> BootPlan | Deferred[BootPlan]:
        """:meth:`_plan`, after asking the machine source when one is configured (without
        one the plan is synchronous, so the hot path pays for no Deferred)."""
        if self.machine_source is None:
            return self._plan(mac, None)
        return self.machine_source.ask(mac).addCallback(lambda said: self._plan(mac, said))

    def _script_for(self, plan: BootPlan, mac: str | None) -> str:
        """The iPXE script that carries out ``plan`` for ``mac``.

        :raises TemplateRenderError: the entry's templated ``cmdline`` fails for ``mac``.
        """
        if plan.action == EXTERNAL and plan.external is not None:
            return ipxe.external_script(plan.external)
        if plan.action == ENTRY and plan.entry is not None:
            return self.unattended.entry_script(plan.entry, mac)
        if plan.action == MENU:
            return self._menu()
        return ipxe.LOCAL_BOOT

    def _answer_script(self, request: IRequest, mac: str) -> bytes | Deferred[bytes]:
        """The boot script for ``mac`` (bytes without a machine source, else a Deferred);
        serving an entry's script moves a pending machine on to installing."""
        planned = self._planned(mac)
        if isinstance(planned, BootPlan):
            return self._render_answer(request, mac, planned)
        return planned.addCallback(lambda plan: self._render_answer(request, mac, plan))

    def _render_answer(self, request: IRequest, mac: str, plan: BootPlan) -> bytes:
        """Render and publish the answer for ``mac``."""
        try:
            script = self._script_for(plan, mac)
        except TemplateRenderError as e:
            return self._render_failed(request, mac, e)
        if plan.action == ENTRY and plan.entry is not None:
            self._note_served(mac, plan.entry)
        self._publish(request, Stage.HTTP_SCRIPT, mac, plan.reason)
        return script_body(request, script)

    def _note_served(self, mac: str, view: EntryView) -> None:
        """Tell the lifecycle that ``mac`` fetched ``view``'s script; a failure to
        record it is logged (the script is served all the same)."""
        entry_id = view.entry.id
        self._recorded(self.machines.script_served(mac, entry_id, boot_file_seen(view)),
                       mac, entry_id)

    def _fetched(self, mac: str, view: EntryView, what: str) -> None:
        """Tell the lifecycle that ``mac`` fetched ``view``'s kernel or image."""
        if mac:
            self._recorded(self.machines.boot_file_fetched(mac, view.entry.id, what), mac,
                           view.entry.id)

    def _recorded(self, d: Deferred[Any] | None, mac: str, entry_id: str) -> None:
        if d is not None:
            d.addErrback(lambda failure: self._log.failure(
                "recording that {mac} fetched the script or kernel of {entry} failed", failure,
                mac=mac, entry=entry_id))

    def _vanished(self, request: IRequest, what: str) -> bytes:
        """A 404 for an entry file that the catalog lists but the disk no longer holds;
        the catalog rescans soon, so the entry goes or comes back."""
        self._log.warn("{what} vanished from disk; rescanning the catalog", what=what)
        self.catalog.rescan_soon()
        return json_body(request, {"error": f"{what} is gone from disk; the catalog is being"
                                            " rescanned"}, 404)

    def _menu(self) -> str:
        return ipxe.menu_script(self.base_url, self.catalog.menu(),
                                self.catalog.default_entry(), self.config.boot.menu_timeout)

    def _publish(self, request: IRequest, stage: str, mac: str | None, detail: str) -> str:
        """Publish a boot event; :returns: the MAC it was charged to (``""``: none)."""
        ip = client_ip(request)
        if not mac and self.lease_mac is not None:
            mac = self.lease_mac(ip)
        self.events.publish(stage, mac=mac or "", ip=ip, detail=detail)
        return mac or ""

    # -- boot routes (iPXE) ------------------------------------------------------------

    @app.route("/pxe/boot.ipxe", methods=["GET"])
    def boot_script(self, request: IRequest) -> bytes | Deferred[bytes]:
        """The entry point: per MAC, the assigned entry, the menu, or local boot."""
        return self._script_route(request, "/pxe/boot.ipxe")

    @app.route("/api/v1/ipxe/boot.ipxe", methods=["GET"])
    def lifecycle_script(self, request: IRequest) -> bytes | Deferred[bytes]:
        """The lifecycle route (PureBoot's embedded script chains here): as
        ``/pxe/boot.ipxe``; without ``?mac=`` a script that chains back with iPXE's MAC."""
        return self._script_route(request, "/api/v1/ipxe/boot.ipxe")

    @app.route("/api/v1/boot", methods=["GET"])
    def lifecycle_boot(self, request: IRequest) -> bytes | Deferred[bytes]:
        """PureBoot's boot route: the machine's iPXE script, as ``/pxe/boot.ipxe?mac=``;
        with ``Accept: application/json`` or ``?format=json``, what it would boot as JSON
        (no side effects; a missing MAC is 422, a bad one 400)."""
        accept = request.getHeader(b"accept") or b""
        if self._query(request, "format") != "json" and b"application/json" not in accept:
            return self._script_route(request, "/api/v1/boot")
        text = self._query(request, "mac")
        mac = self._mac(request, text)
        if mac is None:
            return json_body(request, {"error": "query mac= must be a MAC address"},
                             400 if text else 422)
        planned = self._planned(mac)
        if isinstance(planned, BootPlan):
            return self._plan_json(request, mac, planned)
        return planned.addCallback(lambda plan: self._plan_json(request, mac, plan))

    def _plan_json(self, request: IRequest, mac: str, plan: BootPlan) -> bytes:
        machine = self.machines.get(mac)
        return json_body(request, {
            "mac": mac,
            "entry": plan.entry_id if plan.action == ENTRY else None,
            "local": plan.action == "local",
            "state": machine.state if machine else "unknown",
            "plan": plan.as_json(),
        })

    def _script_route(self, request: IRequest, path: str) -> bytes | Deferred[bytes]:
        """A boot script route's answer: without ``?mac=`` a script chaining back to
        ``path`` with iPXE's MAC, arch and platform; a bad MAC is 400; else the MAC's
        script."""
        text = self._query(request, "mac")
        if text is None:
            return script_body(request, ipxe.entry_point_script(self.base_url, path=path))
        mac = self._mac(request, text)
        if mac is None:
            request.setResponseCode(400)
            return script_body(request, "#!ipxe\necho pxetwist: bad MAC\nexit\n")
        return self._answer_script(request, mac)

    @app.route("/pxe/menu.ipxe", methods=["GET"])
    def menu(self, request: IRequest) -> bytes:
        """The dynamic menu of PXE-enabled entries."""
        mac = self._mac(request, self._query(request, "mac"))
        self._publish(request, Stage.HTTP_MENU, mac, f"{len(self.catalog.menu())} entries")
        return script_body(request, self._menu())

    @app.route("/pxe/secureboot/<name>", methods=["GET", "HEAD"])
    def secure_boot_image(self, request: IRequest, name: str) -> Any:
        """UEFI HTTP Boot under Secure Boot: the FAT image (``<MAC>-<family>.img``) that
        holds shim, GRUB, the GRUB config of this MAC's plan and its entry's files."""
        stem, _, suffix = name.rpartition(".")
        mac_text, _, family_name = stem.rpartition("-")
        mac = api.mac_or_none(mac_text)
        family = next((f for f in signed.FAMILIES if f.name == family_name), None)
        if suffix != "img" or mac is None or family is None:
            return json_body(request, {"error": f"no image {name!r}"}, 404)
        plan = self._plan(mac, None)
        parts = image_parts(self.config, self.catalog, plan, mac, family,
                            self.unattended.grub_args)
        if isinstance(parts, str):
            self._publish(request, Stage.HTTP_FILE, mac, f"no Secure Boot image: {parts}")
            return json_body(request, {"error": parts}, 404)
        if plan.action == ENTRY and plan.entry is not None:
            self._fetched(mac, plan.entry, "Secure Boot image")  # it holds the kernel
        self._publish(request, Stage.HTTP_SCRIPT, mac, f"Secure Boot image: {plan.reason}")
        files, text = parts
        folder = self.config.server.state.parent / "secureboot-images"
        built = self.run_in_thread(fatimage.build_image, folder, files, text)

        def failed(failure: Any) -> bytes:
            failure.trap(fatimage.ImageError)
            self._log.warn("Secure Boot image for {mac}: {error}", mac=mac,
                           error=failure.value)
            return json_body(request, {"error": str(failure.value)}, 500)

        return built.addCallbacks(lambda path: _serve_file(request, str(path)), failed)

    @app.route("/containers/<entry_id>/boot.ipxe", methods=["GET"])
    def entry_boot_script(self, request: IRequest, entry_id: str) -> bytes:
        """One entry's boot script."""
        view = self.catalog.view(entry_id)
        if view is None:
            return json_body(request, {"error": f"no entry {entry_id!r}"}, 404)
        mac = self._mac(request, self._query(request, "mac"))
        try:
            script = self.unattended.entry_script(view, mac)
        except TemplateRenderError as e:
            return self._render_failed(request, mac, e)
        path = view.entry.main_path
        if view.entry.kind == "ipxe" and path is not None:
            try:
                script = path.read_text("utf-8", "replace")
            except OSError:
                return self._vanished(request, f"{path.name} of {entry_id}")
        if mac is not None:
            self._note_served(mac, view)
        self._publish(request, Stage.HTTP_SCRIPT, mac, f"entry {entry_id}")
        return script_body(request, script)

    @app.route("/containers/<entry_id>", methods=["GET", "HEAD"])
    def entry_file(self, request: IRequest, entry_id: str) -> Any:
        """The entry's own file (HTTP-01/02: Range, multi-range, If-Range, HEAD)."""
        view = self.catalog.view(entry_id)
        if view is not None and view.entry.kind != "linux" and is_url(view.entry.file):
            request.redirect(ipxe.script_url(view.entry.file).encode())
            return b""
        path = view.entry.main_path if view is not None else None
        if view is None or path is None:
            return json_body(request, {"error": f"no file for entry {entry_id!r}"}, 404)
        if not path.is_file():
            return self._vanished(request, f"{path.name} of {entry_id}")
        mac = self._publish(request, Stage.HTTP_FILE,
                            self._mac(request, self._query(request, "mac")),
                            f"{entry_id} {path.name}")
        self._fetched(mac, view, "image")
        return _serve_file(request, str(path))

    @app.route("/containers/<entry_id>/files/<name>", methods=["GET", "HEAD"])
    def entry_named_file(self, request: IRequest, entry_id: str, name: str) -> Any:
        """A kernel, initrd or other file of an entry's folder."""
        view = self.catalog.view(entry_id)
        real = None
        if view is not None:
            try:
                real = self.resolved.resolve(view.entry.folder, normalise(name))
            except PathRefusedError:
                real = None
        if (view is not None and (real is None or not os.path.isfile(real))
                and _names_file(view, name) and not is_url(name)):
            return self._vanished(request, f"{name} of {entry_id}")
        if view is None or real is None or "/" in name or not os.path.isfile(real):
            return json_body(request, {"error": f"no file {name!r} in entry {entry_id!r}"},
                             404)
        entry = view.entry
        stage = (Stage.HTTP_KERNEL if name == entry.kernel else
                 Stage.HTTP_INITRD if name in entry.initrd else Stage.HTTP_FILE)
        mac = self._publish(request, stage, self._mac(request, self._query(request, "mac")),
                            f"{entry_id} {name}")
        if stage == Stage.HTTP_KERNEL:
            self._fetched(mac, view, "kernel")
        return _serve_file(request, real)

    @app.route("/files/<path:name>", methods=["GET", "HEAD"])
    def fallback_file(self, request: IRequest, name: str) -> Any:
        """Files from the TFTP root, then ``ipxe_dir``, over HTTP (faster for iPXE)."""
        try:
            relative = normalise(name)
            for folder in self.file_folders:
                real = resolve_inside(folder, relative,
                                      links_may_leave=folder == self.config.tftp.ipxe_dir)
                if real is not None and os.path.isfile(real):
                    self._publish(request, Stage.HTTP_FILE, None, relative)
                    return _serve_file(request, real)
        except PathRefusedError:
            pass
        if name in ("autoexec.ipxe", "boot.ipxe"):  # what a signed iPXE reads beside itself
            self._publish(request, Stage.HTTP_SCRIPT, None, name)
            return script_body(request, ipxe.entry_point_script(self.base_url))
        return json_body(request, {"error": f"no file {name!r}"}, 404)

    # -- management routes (JSON) ------------------------------------------------------

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        """Liveness and what runs: for load balancers and the operator's first look.
        ``degraded`` while the state's database is away (TFTP and HTTP keep serving)."""
        database = self.store.status()
        return json_body(
            request,
            {
                "status": "ok" if database["ok"] else "degraded",
                "version": __version__,
                "services": list(self.services),
                "entries": len(self.catalog.entries),
                "database": database,
            },
        )

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """Prometheus text format."""
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return generate_latest()

    @app.route("/containers", methods=["GET"])
    def containers(self, request: IRequest) -> bytes:
        """The whole catalog with settings, and the entries that could not be read."""
        return json_body(
            request,
            {
                "entries": [view.as_json() for view in self.catalog.views()],
                "errors": [problem.as_json() for problem in self.catalog.problems]
                + self.unattended.renderer.problems(),
            },
        )

    @app.route("/containers/<entry_id>/info", methods=["GET"])
    def container_info(self, request: IRequest, entry_id: str) -> bytes:
        view = self.catalog.view(entry_id)
        if view is None:
            return json_body(request, {"error": f"no entry {entry_id!r}"}, 404)
        return json_body(request, view.as_json())

    @app.route("/pxe", methods=["GET"])
    def pxe(self, request: IRequest) -> bytes:
        """The entries offered in the menu, in order, with the default and timeout."""
        default = self.catalog.default_entry()
        return json_body(request, {
            "entries": [view.as_json() for view in self.catalog.menu()],
            "default": default.entry.id if default else None,
            "timeout": self.config.boot.menu_timeout,
        })

    @app.handle_errors(api.ApiError)
    def api_error(self, request: IRequest, failure: Any) -> bytes:
        """Every refused API call: its status and ``{"error": reason}``."""
        error: api.ApiError = failure.value
        return json_body(request, {"error": str(error)}, error.code)

    @app.handle_errors(NotFound, MethodNotAllowed)
    def routing_error(self, request: IRequest, failure: Any) -> bytes:
        """No such route (404) or not with this method (405, with ``Allow``): JSON like
        every API error, but iPXE-readable text for a script path (``*.ipxe``)."""
        error: HTTPException = failure.value
        code = error.code or 500
        if isinstance(error, MethodNotAllowed):
            allowed = sorted(error.valid_methods or ())
            request.setHeader(b"Allow", ", ".join(allowed).encode())
            reason = f"{request.method.decode('latin-1')} is not allowed here " \
                     f"(allowed: {', '.join(allowed)})"
        else:
            reason = f"no route {request.path.decode('latin-1')!r}"
        if request.path.endswith(b".ipxe"):
            request.setResponseCode(code)
            return script_body(request, f"#!ipxe\necho pxetwist: {code}\nexit 1\n")
        return json_body(request, {"error": reason}, code)

    def _require_mutation(self, request: IRequest) -> None:
        api.require_mutation(request, self.config.http.api_token)

    def _known_entry(self, entry_id: str) -> None:
        """:raises api.ApiError: 404 if the catalog has no such entry."""
        if self.catalog.view(entry_id) is None:
            raise api.ApiError(f"no entry {entry_id!r}", 404)

    def _entry_json(self, entry_id: str) -> dict[str, Any]:
        view = self.catalog.view(entry_id)
        return view.as_json() if view else {}

    @app.route("/pxe/<entry_id>/toggle", methods=["POST"])
    @inlineCallbacks
    def toggle(self, request: IRequest, entry_id: str) -> Any:
        self._require_mutation(request)
        self._known_entry(entry_id)
        wanted = api.toggle_state(api.read_json(request))
        if wanted is None:
            yield self.catalog.toggle(entry_id)
        else:
            yield self.catalog.set_pxe(entry_id, wanted)
        return json_body(request, self._entry_json(entry_id))

    @app.route("/pxe/<entry_id>/menu", methods=["POST"])
    @inlineCallbacks
    def set_menu(self, request: IRequest, entry_id: str) -> Any:
        self._require_mutation(request)
        self._known_entry(entry_id)
        changes = api.menu_changes(api.read_json(request))
        kind = self.catalog.view(entry_id).entry.kind  # type: ignore[union-attr]
        if changes.get("kernel_args") and kind != "linux":
            raise api.BadRequestError(f"kernel_args: a {kind} entry takes no kernel "
                                      "arguments (only linux entries do)")
        pxe = changes.pop("pxe", None)
        if pxe is not None:
            yield self.catalog.set_pxe(entry_id, pxe)
        if "order" in changes and changes["order"] is None:
            changes["clear_order"] = True  # "order": null drops the explicit order
        yield self.catalog.set_menu(entry_id, **changes)
        return json_body(request, self._entry_json(entry_id))

    @app.route("/catalog/refresh", methods=["POST"])
    @inlineCallbacks
    def refresh(self, request: IRequest) -> Any:
        self._require_mutation(request)
        yield self.catalog.refresh()
        return json_body(request, {"entries": len(self.catalog.entries),
                                   "errors": len(self.catalog.problems)})

    @app.route("/machines", methods=["GET"])
    def machines_list(self, request: IRequest) -> bytes:
        """A page of machine records by MAC: ``?limit=N&after=MAC``; ``next`` is the
        ``after`` of the next page (``null`` on the last)."""
        limit, after = api.machines_query(request)
        page, following = self.machines.page(limit, after)
        return json_body(request, {"machines": [machine_json(m) for m in page],
                                   "next": following, "total": self.machines.count()})

    @app.route("/machines/<mac_text>", methods=["GET"])
    @inlineCallbacks
    def machine(self, request: IRequest, mac_text: str) -> Any:
        mac = api.path_mac(mac_text)
        record = self.machines.get(mac)
        if record is None:
            raise api.ApiError(f"machine {mac} was never seen", 404)
        yield self.machines.flush()
        history = yield self.store.history(mac)
        body = machine_json(record)
        body["installed_url"] = self.machines.installed_url(self.base_url, mac)
        body["templates"] = self.unattended.template_links(record, self.catalog.view)
        body["history"] = [
            {"time": e.time, "mac": e.mac, "ip": e.ip, "stage": e.stage, "detail": e.detail,
             "arch": e.arch, "uuid": e.uuid} for e in history
        ]
        return json_body(request, body)

    @app.route("/machines/<mac_text>", methods=["PUT"])
    @inlineCallbacks
    def assign(self, request: IRequest, mac_text: str) -> Any:
        self._require_mutation(request)
        mac = api.path_mac(mac_text)
        body = api.read_json(request)
        loader_given, loader = api.loader_change(body)
        if loader_given and set(body) == {"loader"}:  # only the loader changes
            record = yield self.machines.set_loader(mac, loader)
            return json_body(request, machine_json(record))
        hostname, variables = machine_data(body)
        entry, once = api.assignment(body)
        if entry is not None:
            self._known_entry(entry)
        record = yield self.machines.assign(mac, entry, once, hostname, variables,
                                            loader if loader_given else KEEP_LOADER)
        return json_body(request, machine_json(record))

    @app.route("/machines", methods=["POST"])
    @inlineCallbacks
    def assign_many(self, request: IRequest) -> Any:
        """Bulk assignment: a JSON list of ``PUT /machines/{mac}`` bodies with ``mac``;
        all or nothing (400 with ``rows``: each refused row's index, MAC and reason)."""
        self._require_mutation(request)
        try:
            records = yield self.unattended.assign_many(
                api.read_json_value(request, api.MAX_BULK_BODY), self.catalog.view)
        except BulkError as e:
            return json_body(request, {"error": str(e), "rows": e.rows}, 400)
        return json_body(request, {"machines": [machine_json(m) for m in records]})

    @app.route("/machines/<mac_text>/templates/<name>", methods=["GET"])
    def machine_template(self, request: IRequest, mac_text: str, name: str) -> bytes:
        """The machine's current entry's template ``name``, rendered for it."""
        mac = api.path_mac(mac_text)
        try:
            entry_id, text = self.unattended.render(mac, name, self.catalog.view)
        except TemplateRenderError as e:
            self._publish(request, Stage.HTTP_TEMPLATE, mac, f"{name} failed: {e}")
            return json_body(request, {"error": str(e)}, 500)
        self._publish(request, Stage.HTTP_TEMPLATE, mac, f"{entry_id} {name}")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return text.encode()

    def _render_failed(self, request: IRequest, mac: str | None,
                       error: TemplateRenderError) -> bytes:
        """A boot script that cannot be rendered for ``mac``: 500 (iPXE then retries and
        boots local), an event, and the reason in ``GET /containers`` errors."""
        self._log.warn("boot script for {mac} cannot be rendered: {error}", mac=mac,
                       error=str(error))
        self._publish(request, Stage.HTTP_SCRIPT, mac, f"cannot render: {error}")
        request.setResponseCode(500)
        return script_body(request, f"#!ipxe\necho pxetwist: {ipxe.script_text(str(error))}\n"
                                    "exit 1\n")

    @app.route("/api/v1/machines/<mac_text>/installed", methods=["GET", "POST"])
    @inlineCallbacks
    def installed(self, request: IRequest, mac_text: str) -> Any:
        """The install-done callback: with ``?token=`` (the machine's callback token, for
        its current assignment) or with the admin token."""
        mac = api.path_mac(mac_text)
        token = api.query_only(request, "token")  # a form body (cloud-init's phone_home
        if token is None:                         # posts one) must not stand in for it
            self._require_mutation(request)
        elif not self.machines.token_matches(mac, token):
            raise api.ApiError(f"wrong callback token for {mac} (or not for its current "
                               "assignment)", 403)
        how = f"{'callback' if token is not None else 'admin'} from {client_ip(request)}"
        record = yield self.machines.installed(mac, how)
        return json_body(request, machine_json(record))

    @app.route("/machines/<mac_text>/explain", methods=["GET"])
    def explain(self, request: IRequest, mac_text: str) -> Deferred[bytes]:
        """What this MAC gets at every step, and why, without booting it: the same plan
        its boot script follows, the machine source asked (or not answering) included."""
        mac = api.path_mac(mac_text)
        planned = self._planned(mac)
        d = succeed(planned) if isinstance(planned, BootPlan) else planned
        return d.addCallback(lambda plan: self._explain_json(request, mac, plan))

    def _explain_json(self, request: IRequest, mac: str, plan: BootPlan) -> bytes:
        record = self.machines.get(mac)
        return json_body(request, {
            "mac": mac,
            "machine": machine_json(record) if record else None,
            "decision": plan.reason,
            "plan": plan.as_json(),
            "entry": plan.entry.as_json() if plan.entry else None,
            "dhcp": self.dhcp_explain(mac) if self.dhcp_explain else [],
            "script": self._explained_script(plan, mac),
            "grub": machine_grub_config(self.machines, self.catalog, self.config, mac,
                                        self.unattended.grub_args)[1],
            "secure_boot": explain_chain(self.config, *self._loader(mac), plan, mac,
                                         self.unattended.grub_args),
        })

    def _explained_script(self, plan: BootPlan, mac: str) -> str:
        """The script ``mac`` would get, or why it cannot be rendered for it."""
        try:
            return self._script_for(plan, mac)
        except TemplateRenderError as e:
            return f"(cannot be rendered: {e})"

    def _loader(self, mac: str) -> tuple[str, str]:
        return loader_for(self.machines.loader(mac), self.config.boot.efi_loader)

    @app.route("/leases", methods=["GET"])
    @inlineCallbacks
    def leases(self, request: IRequest) -> Any:
        rows = yield self.store.leases()
        return json_body(request, {"leases": [
            {"ip": r.ip, "mac": r.mac, "client_id": r.client_id, "hostname": r.hostname,
             "expires": r.expires, "state": r.state} for r in rows]})

    @app.route("/events", methods=["GET"])
    def events_list(self, request: Request) -> Any:
        """Recent boot events; ``?after=N&wait=S`` long-polls, ``text/event-stream`` streams."""
        query = api.events_query(request)
        accept = request.getHeader(b"accept") or b""
        if b"text/event-stream" in accept:
            return api.event_stream(request, self.events, query.mac)
        return api.events_answer(request, self.events, query, json_body)

    @app.route("/ui/", branch=True, methods=["GET", "HEAD"])
    def ui(self, request: IRequest) -> Any:
        """The web page (static files)."""
        if not UI_FOLDER.is_dir():
            return json_body(request, {"error": "the web page is not installed"}, 404)
        return _FileOnly(str(UI_FOLDER), defaultType="application/octet-stream")
