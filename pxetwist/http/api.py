"""Checking what API callers send, and the events feed (long-poll and server-sent events).

Every mutation passes :func:`refuse_unauthorised`; every body passes one of the
checkers here, which raise :class:`BadRequestError` with a one-line reason the
route returns as ``400 {"error": ...}``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from pxetwist.config import normalise_mac
from pxetwist.events import BootEvent, EventBus
from pxetwist.http.ipxe import UnsafeTextError, check_args, check_label

#: Largest JSON body accepted.
MAX_BODY = 64 * 1024
#: Largest body of a bulk ``POST /machines`` (thousands of rows with their vars).
MAX_BULK_BODY = 8 * 1024 * 1024
#: Longest long-poll wait, seconds.
MAX_WAIT = 30.0
#: Seconds between keepalive comments on an event stream.
KEEPALIVE = 15.0


class ApiError(Exception):
    """A request the API refuses: ``code`` is the status, ``str()`` the reason sent back
    as ``{"error": reason}`` (the app's one error handler renders it)."""

    def __init__(self, reason: str, code: int = 400) -> None:
        super().__init__(reason)
        self.code = code


class BadRequestError(ApiError, ValueError):
    """A body or query the API cannot take (400)."""


def require_mutation(request: IRequest, token: str) -> None:
    """:raises ApiError: 401/403 unless the request may mutate (:func:`refuse_unauthorised`)."""
    refused = refuse_unauthorised(request, token)
    if refused is not None:
        body, code = refused
        raise ApiError(body["error"], code)


def path_mac(text: str) -> str:
    """The normalised MAC of a path part. :raises ApiError: 400 if it is not one."""
    mac = mac_or_none(text)
    if mac is None:
        raise ApiError(f"{text!r} is not a MAC address")
    return mac


def mac_or_none(text: str | None) -> str | None:
    """A normalised MAC from ``aa:bb:..`` or ``aa-bb-..`` text, else ``None``."""
    return normalise_mac(text) if text else None


def refuse_unauthorised(request: IRequest, token: str) -> tuple[dict[str, str], int] | None:
    """``None`` if the request may mutate, else the JSON error body and status.

    With a token configured, ``Authorization: Bearer <token>`` is required (compared in
    constant time). Without one, only loopback clients may mutate.
    """
    if token:
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return {"error": "this needs Authorization: Bearer <api_token>"}, 401
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return {"error": "wrong API token"}, 401
        return None
    host = str(getattr(request.getClientAddress(), "host", ""))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return {"error": "no [http] api_token is configured: changes only from loopback"}, 403
    return None


def read_json(request: IRequest) -> dict[str, Any]:
    """The request body as a JSON object. :raises BadRequestError: otherwise."""
    body = read_json_value(request)
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object")
    return body


def read_json_value(request: IRequest, limit: int = MAX_BODY) -> Any:
    """The request body as any JSON value (``{}`` when empty).

    :raises BadRequestError: larger than ``limit`` bytes, or not JSON."""
    content = request.content
    raw = content.read(limit + 1) if content is not None else b""
    if len(raw) > limit:
        raise BadRequestError(f"body larger than {limit} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("body is not valid JSON") from None
    except RecursionError:  # 64 KiB of "[" nests deeper than the parser goes (fuzz finding)
        raise BadRequestError("body nests too deeply") from None
    return body


def _typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body[key]
    if isinstance(value, bool) and kind is int:
        raise BadRequestError(f"{key} must be {what}")
    if not isinstance(value, kind):
        raise BadRequestError(f"{key} must be {what}")
    return value


def menu_changes(body: dict[str, Any]) -> dict[str, Any]:
    """Keyword changes for ``CatalogService.set_menu`` (plus ``pxe``) from a JSON body."""
    allowed = {"label", "order", "default", "kernel_args", "pxe"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequestError(f"unknown field {unknown[0]!r}")
    changes: dict[str, Any] = {}
    try:
        if "label" in body:
            changes["label"] = check_label(_typed(body, "label", str, "a string"))
        if "kernel_args" in body:
            changes["kernel_args"] = check_args(_typed(body, "kernel_args", str, "a string"))
    except UnsafeTextError as e:
        field = "label" if "label" in body and "label" not in changes else "kernel_args"
        raise BadRequestError(f"{field}: {e}") from None
    if "order" in body:
        order = body["order"]
        if order is not None:
            order = _typed(body, "order", int, "a whole number or null")
            if not -1_000_000 <= order <= 1_000_000:
                raise BadRequestError("order out of range")
        changes["order"] = order
    if "default" in body:
        changes["default"] = _typed(body, "default", bool, "true or false")
    if "pxe" in body:
        changes["pxe"] = _typed(body, "pxe", bool, "true or false")
    return changes


def toggle_state(body: dict[str, Any]) -> bool | None:
    """The state a ``POST /pxe/{id}/toggle`` body asks for: ``{"enabled": bool}`` (or
    ``{"pxe": bool}``) sets it, an empty body (``None``) flips it.

    :raises BadRequestError: for any other body.
    """
    if not body:
        return None
    if len(body) != 1 or next(iter(body)) not in ("enabled", "pxe"):
        raise BadRequestError('body must be {"enabled": true|false} (or empty to flip)')
    key = next(iter(body))
    return bool(_typed(body, key, bool, "true or false"))


def assignment(body: dict[str, Any]) -> tuple[str | None, bool]:
    """``(entry id or None for local, once)`` from a ``PUT /machines/{mac}`` body;
    ``once`` defaults to false (permanent), as the CLI's ``assign``."""
    unknown = sorted(set(body) - {"entry", "once", "loader"})
    if unknown:
        raise BadRequestError(f"unknown field {unknown[0]!r}")
    if "entry" not in body:
        raise BadRequestError("entry is required (an entry id, or null for local boot)")
    entry = body["entry"]
    if entry is not None and (not isinstance(entry, str) or not entry or len(entry) > 200):
        raise BadRequestError("entry must be an entry id or null")
    once = body.get("once", False)
    if not isinstance(once, bool):
        raise BadRequestError("once must be true or false")
    return entry, once


def loader_change(body: dict[str, Any]) -> tuple[bool, str | None]:
    """``(given, loader)`` of a ``PUT /machines/{mac}`` body: ``loader`` is ``"shim"``,
    ``"ipxe"`` or ``null`` (follow ``[boot] efi_loader``)."""
    if "loader" not in body:
        return False, None
    loader = body["loader"]
    if loader is not None and loader not in ("ipxe", "shim"):
        raise BadRequestError('loader must be "ipxe", "shim" or null')
    return True, loader


#: ``GET /machines`` page size when ``?limit=`` is not given, and the largest allowed.
MACHINES_PAGE = 500
MAX_MACHINES_PAGE = 10_000


def machines_query(request: IRequest) -> tuple[int, str | None]:
    """``(limit, after)`` of ``GET /machines?limit=N&after=MAC``, checked."""
    limit_text = _arg(request, "limit")
    after_text = _arg(request, "after")
    try:
        limit = int(limit_text) if limit_text else MACHINES_PAGE
    except ValueError:
        raise BadRequestError("limit must be a whole number") from None
    if not 0 < limit <= MAX_MACHINES_PAGE:
        raise BadRequestError(f"limit must be 1..{MAX_MACHINES_PAGE}")
    after = mac_or_none(after_text)
    if after_text and after is None:
        raise BadRequestError("after must be a MAC address (the previous page's next)")
    return limit, after


def query_only(request: IRequest, name: str) -> str | None:
    """The first ``name`` of the URL's query string, never of a form body (Twisted merges
    a ``application/x-www-form-urlencoded`` body into ``request.args``)."""
    query = request.uri.partition(b"?")[2].decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[0] if values else None


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


@frozen
class EventsQuery:
    mac: str | None
    after: int
    wait: float
    limit: int


def events_query(request: IRequest) -> EventsQuery:
    """``?mac=&after=&wait=&limit=`` checked."""

    def arg(name: str) -> str | None:
        values = request.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else None

    mac_text = arg("mac")
    mac = mac_or_none(mac_text)
    if mac_text and mac is None:
        raise BadRequestError("mac must be a MAC address")
    try:
        after = int(arg("after") or 0)
        wait = min(float(arg("wait") or 0), MAX_WAIT)
        limit = int(arg("limit") or 500)
    except ValueError:
        raise BadRequestError("after, wait and limit must be numbers") from None
    if after < 0 or wait < 0 or not 0 < limit <= 10_000 or wait != wait:
        raise BadRequestError("after, wait and limit out of range")
    return EventsQuery(mac, after, wait, limit)


def events_answer(request: Request, bus: EventBus, query: EventsQuery,
                  render: Callable[[IRequest, Any], bytes]) -> Any:
    """The recent events now, or, with ``wait``, as soon as one newer than ``after`` comes."""

    def body() -> bytes:
        events = bus.recent(mac=query.mac, after=query.after, limit=query.limit)
        return render(request, {"events": [e.as_json() for e in events], "last": bus.last_seq})

    if query.wait <= 0 or bus.recent(mac=query.mac, after=query.after, limit=1):
        return body()
    answered: Deferred[bytes] = Deferred()

    def arrived(event: BootEvent) -> None:
        if query.mac is None or event.mac == query.mac:
            finish()

    def finish() -> None:
        unsubscribe()
        if timer.active():
            timer.cancel()
        if not answered.called:
            answered.callback(body())

    def gone(_: object) -> None:
        unsubscribe()
        if timer.active():
            timer.cancel()

    unsubscribe = bus.subscribe(arrived)
    timer = bus.clock.callLater(query.wait, finish)
    request.notifyFinish().addBoth(gone)
    return answered


def event_stream(request: Request, bus: EventBus, mac: str | None) -> Deferred[bytes]:
    """Server-sent events: every new event (of ``mac``) as ``id:``/``data:``, until the
    client goes away; a comment every :data:`KEEPALIVE` seconds keeps proxies open.

    :returns: a Deferred that fires only when the client has gone (Klein would finish
        the response at once on ``NOT_DONE_YET``).
    """
    request.setHeader(b"Content-Type", b"text/event-stream")
    request.setHeader(b"Cache-Control", b"no-store")
    request.write(b": pxetwist events\n\n")

    def send(event: BootEvent) -> None:
        if mac is None or event.mac == mac:
            request.write(f"id: {event.seq}\ndata: {json.dumps(event.as_json())}\n\n".encode())

    timers: list[Any] = []

    def keepalive() -> None:
        request.write(b": keepalive\n\n")
        timers[:] = [bus.clock.callLater(KEEPALIVE, keepalive)]

    unsubscribe = bus.subscribe(send)
    timers.append(bus.clock.callLater(KEEPALIVE, keepalive))

    ended: Deferred[bytes] = Deferred()

    def gone(_: object) -> None:
        unsubscribe()
        for timer in timers:
            if timer.active():
                timer.cancel()
        ended.callback(b"")

    request.notifyFinish().addBoth(gone)
    return ended
