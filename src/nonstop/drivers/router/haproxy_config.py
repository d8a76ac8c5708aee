"""HAProxy's config file, its runtime-API commands and its log lines: pure, tested from tables.

The config is written once, when HAProxy starts; every routing change afterwards goes through
the runtime API (``add server``, ``set server``, ``del server``), never a reload::

    ring nonstop_events    the request log, in HAProxy's memory; the agent reads it over the
                           admin socket (``show events nonstop_events -w``)
    frontend nonstop       bind <listen>; nonstop_panic while no server of nonstop_app is
                           usable and one of nonstop_panic is, else default_backend nonstop_app
    backend nonstop_app    roundrobin; one server per upstream, named by its address, health
                           checked; HAProxy's own 503 (no server in rotation) says "503 no
                           upstream ..."
    backend nonstop_panic  the same servers and weights without health checks: panic mode, when
                           checks have taken every server of nonstop_app down (decision 0570)
    backend nonstop_slot_a the ready instances of one release each (``release_slots``, decision
    backend nonstop_slot_b 0581): a request stamped ``X-Nonstop-Release: R`` goes to R's slot
                           while it has a usable server, else to the table as any request;
                           always declared (empty without ``release_slots``)

With ``release_slots`` the frontend maps the stamp to a slot (``slots.map``: ``release a|b``) and
deletes the header before forwarding; with ``release_stamp`` (the fleet's edge) it removes a
client's own stamp and sets the one of ``release.map`` (key ``live``), and the health checks
carry it. Both maps change only through the runtime API (``add map``, ``del map``, ``set map``).

A server is named by its address (``127.0.0.1:18081``: HAProxy accepts letters, digits and
``.:_-`` in names), so the log line and ``show stat`` name the upstream directly.

Weights: HAProxy takes 0..256. The table's weights are divided by their greatest common
divisor ([90, 10] -> [9, 1]); if the largest is still above 256 they are scaled to it, and a
positive weight never rounds down to 0 ([1000, 1] -> [256, 1]).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from nonstop.config.validate import release_name_problem
from nonstop.drivers.router.admin import PROBE_HEADER, PROBE_PATH, PROBE_VALUE
from nonstop.drivers.router.base import RequestEvent, RouteTable
from nonstop.drivers.router.settings import ProxyTimings
from nonstop.drivers.router.table import validate_table
from nonstop.errors import RouterError

BACKEND = "nonstop_app"
PANIC_BACKEND = "nonstop_panic"
"""The table's servers again, unchecked: where requests go while health checks have taken every
server of BACKEND down (Envoy's panic mode; decision 0570)."""
SLOT_LETTERS = ("a", "b")
"""Two slots: blue and green (the release serving and the one held or kept warm)."""


def slot_backend(letter: str) -> str:
    return f"nonstop_slot_{letter}"


SLOT_BACKENDS = tuple(slot_backend(letter) for letter in SLOT_LETTERS)
BACKENDS = (BACKEND, PANIC_BACKEND, *SLOT_BACKENDS)
RELEASE_HEADER = "X-Nonstop-Release"
LIVE_KEY = "live"
"""The release map's one key: the release the edge stamps."""
MARK_KEY = ".nonstop"
MARK_LINE = f"{MARK_KEY} present\n"
"""First entry of the slot and release maps: ``show map`` answers nothing for an empty map,
which the runtime-API client cannot tell from a reply cut off (it retries and fails); with
the mark a reply is never empty. No release name starts with "." (config/validate.py), so the
mark never routes a request."""
RING = "nonstop_events"
RING_BYTES = 4 * 1024 * 1024
"""About 50,000 request lines of ~80 bytes: what HAProxy holds while the agent reads slowly."""
FRONTEND = "nonstop"
MAX_WEIGHT = 256
LOG_TAG = "nonstop-req"
LOG_FORMAT = f"{LOG_TAG} %Ts %ms %ST %Tt %ts %s"
"""Accept time (epoch seconds, then milliseconds), status, total time (ms), termination state,
server name (``<NOSRV>`` when no server was chosen)."""
NO_SERVER = "<NOSRV>"
BODY_TYPE = "text/plain; charset=utf-8"
_NAME_OK = re.compile(r"[A-Za-z0-9._:-]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class HAProxyTuning(ProxyTimings):
    """Seconds throughout (decision 0331).

    ``drain_timeout``: ``hard-stop-after`` and ``close-spread-time`` for a soft stop (``stop()``,
    or a replacement started with ``-sf``): idle keep-alive clients are closed spread over that
    window, not all at once, and tunnels (websockets) still open when it ends are cut. Routing
    changes never stop the process: a server taken out of the table keeps its open requests and
    streams until they end (``stream_grace``: until at most that long; decision 0460).

    ``connect_timeout`` / ``retries``: a refused or timed-out connect is retried ``retries``
    times, each on another server (``option redispatch 1``), so an instance that just died is not
    a user-visible error while another one is up. GET, HEAD and OPTIONS are also retried when
    the server reset the connection before answering or timed out (``retry-on``); other methods
    only when nothing was sent.

    Health: every server is checked every ``health_interval`` (an HTTP GET of ``health_path``,
    or a TCP connect without one; each check may take ``health_timeout``), ``health_fails``
    failed checks take it out of rotation and one good check brings it back; a connection error
    seen on a real request takes it out at once (``observe layer4``, ``on-error mark-down``).

    ``upstream_timeout``: how long HAProxy waits for the server to send anything (response
    headers, or the next piece of a slow body) before a 504 naming it. Websockets and other
    upgraded connections use ``stream_idle_timeout`` (``timeout tunnel``) instead.

    ``client_timeout``: how long an idle client keep-alive connection stays open (the client,
    which usually gives up sooner, closes it first: no race with a request in flight).
    """

    connect_timeout: float = 1.0
    retries: int = 3
    client_timeout: float = 300.0


def server_options(tuning: HAProxyTuning) -> str:
    """What every server line (and ``add server``) carries after its weight: health checks and
    passive marking down."""
    return (
        f"check inter {_ms(tuning.health_interval)} fall {tuning.health_fails} rise 1 "
        "observe layer4 error-limit 1 on-error mark-down"
    )


def server_name(address: str) -> str:
    """The server's name in HAProxy: its address itself (RouterError if HAProxy would refuse)."""
    if not _NAME_OK.fullmatch(address):
        raise RouterError(
            f"upstream address {address!r}: HAProxy server names allow only letters, digits "
            "and '.:_-' (use an IPv4 address or a host name)"
        )
    return address


def haproxy_weights(weights: list[int]) -> list[int]:
    """Table weights -> HAProxy weights (0..256): [90, 10] -> [9, 1]; [0, 3] -> [0, 1];
    [1000, 1] -> [256, 1]; [600, 300, 100] -> [6, 3, 1]."""
    divisor = reduce(math.gcd, weights, 0) or 1
    reduced = [w // divisor for w in weights]
    top = max(reduced, default=0)
    if top <= MAX_WEIGHT:
        return reduced
    return [max(1, round(w * MAX_WEIGHT / top)) if w > 0 else 0 for w in reduced]


def desired_servers(table: RouteTable) -> dict[str, tuple[str, int]]:
    """Server name -> (address, HAProxy weight) for every upstream of ``table``."""
    validate_table(table)
    scaled = haproxy_weights([u.weight for u in table.upstreams])
    return {
        server_name(u.address): (u.address, weight)
        for u, weight in zip(table.upstreams, scaled, strict=True)
    }


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of the backend as ``show servers state`` reports it."""

    name: str
    weight: int
    maint: bool
    """Administratively in maintenance (taken out of the table, or just added)."""


def plan_changes(
    desired: dict[str, tuple[str, int]],
    current: Iterable[ServerState],
    options: str = "",
    backend: str = BACKEND,
) -> Plan:
    """Commands from the backend's ``current`` servers to ``desired``, ordered so that capacity
    only grows before it shrinks: first new servers are added and enabled, draining ones come
    back and weights go up; then weights go down; servers leaving go to maintenance last. So the
    backend never passes through a state with no server in rotation when the old and the new
    table both have one (a switch A -> B under load always has A or B, or both).

    Worked example: current A (weight 1, ready), desired A weight 0 and B weight 1 ->
    ``add server nonstop_app/B B weight 1``, ``enable server nonstop_app/B``, then
    ``set server nonstop_app/A weight 0`` (in the other order, for a moment, no server would
    take a request and HAProxy would answer 503). With ``options`` (``check ...``, see
    :func:`server_options`) a new server carries them and its checks are turned on
    (``enable health``) before it is enabled. ``backend``: whose servers these are (the panic
    backend gets the same plan without options)."""
    now = {s.name: s for s in current}
    grow: list[str] = []
    shrink: list[str] = []
    leave: list[str] = []
    leaving: list[str] = []
    for name, (address, weight) in desired.items():
        server = f"{backend}/{name}"
        state = now.get(name)
        if state is None:
            grow.append(
                f"add server {server} {address} weight {weight}{' ' * bool(options)}{options}"
            )
            if "check" in options.split():
                grow.append(f"enable health {server}")
            grow.append(f"enable server {server}")
            continue
        if state.weight != weight:
            (grow if weight > state.weight else shrink).append(
                f"set server {server} weight {weight}"
            )
        if state.maint:
            grow.append(f"set server {server} state ready")
    for name, state in now.items():
        if name not in desired and not state.maint:
            leave.append(f"set server {backend}/{name} state maint")
            leaving.append(name)
    return Plan(commands=tuple(grow + shrink + leave), leaving=tuple(leaving))


@dataclass(frozen=True, slots=True)
class Plan:
    """Runtime-API commands that turn the backend into the table, in a safe order."""

    commands: tuple[str, ...]
    leaving: tuple[str, ...]
    """Servers put into maintenance now (not in the table any more): to delete once idle."""


def parse_servers_state(text: str) -> list[ServerState]:
    """``show servers state nonstop_app`` -> the servers. The first line is a version ("1"), the
    second the column names; srv_admin_state is a bit field where 0x01 is forced maintenance."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise RouterError(f"haproxy: unexpected 'show servers state' output {text[:200]!r}")
    columns = header[2:].split()
    try:
        name_i, admin_i = columns.index("srv_name"), columns.index("srv_admin_state")
        weight_i = columns.index("srv_uweight")
    except ValueError as exc:
        raise RouterError(f"haproxy: 'show servers state' lacks a column: {exc}") from exc
    servers: list[ServerState] = []
    for line in lines[lines.index(header) + 1 :]:
        fields = line.split()
        try:
            servers.append(
                ServerState(
                    name=fields[name_i],
                    weight=int(fields[weight_i]),
                    maint=bool(int(fields[admin_i]) & 0x01),
                )
            )
        except (IndexError, ValueError) as exc:
            raise RouterError(f"haproxy: unreadable server state line {line!r}") from exc
    return servers


def parse_sessions(csv_text: str, backend: str = BACKEND) -> dict[str, int]:
    """``show stat`` (CSV) -> current sessions + queued requests per server of ``backend``."""
    lines = csv_text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RouterError(f"haproxy: unexpected 'show stat' output {csv_text[:200]!r}")
    columns = lines[0][2:].split(",")
    try:
        px_i, sv_i = columns.index("pxname"), columns.index("svname")
        scur_i, qcur_i = columns.index("scur"), columns.index("qcur")
    except ValueError as exc:
        raise RouterError(f"haproxy: 'show stat' lacks a column: {exc}") from exc
    sessions: dict[str, int] = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) <= max(px_i, sv_i, scur_i, qcur_i) or fields[px_i] != backend:
            continue
        if fields[sv_i] in ("BACKEND", "FRONTEND"):
            continue
        sessions[fields[sv_i]] = _int(fields[scur_i]) + _int(fields[qcur_i])
    return sessions


def _int(text: str) -> int:
    return int(text) if text.strip().lstrip("-").isdigit() else 0


def parse_log_line(line: bytes | str) -> RequestEvent | None:
    """One raw log datagram -> RequestEvent; None for anything else (HAProxy's own notices, a
    request the client abandoned before any status, a malformed line).

    ``nonstop-req 1795675294 086 200 12 -- 127.0.0.1:18081`` ->
    ``RequestEvent(ts=1795675294.098, upstream="127.0.0.1:18081", status=200, duration_ms=12)``.

    The termination state tells who produced the response: a state whose second letter is R, Q,
    C, H or T (the session ended before the server's response headers) with a first letter that
    is not ``-`` means HAProxy answered itself (``SC`` refused connect -> 503; ``SH`` reset or
    bad response -> 502; ``sH`` server timeout -> 504): ``proxy_error`` for a 5xx, and
    ``upstream`` is the server named in the line, which after retries and redispatch is the last
    one HAProxy tried. ``<NOSRV>`` (nothing in rotation, no server tried) gives ``upstream``
    None. An application's own 503 is ``--`` with its server name: not a proxy error."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    fields = text.strip().split()
    if len(fields) != 7 or fields[0] != LOG_TAG:
        return None
    _tag, seconds, millis, status_s, total_s, term, server = fields
    try:
        status = int(status_s)
        total_ms = float(total_s.lstrip("+"))
        ts = int(seconds) + int(millis) / 1000 + max(total_ms, 0.0) / 1000
    except ValueError:
        return None
    if status < 100 or len(term) != 2:
        return None
    by_proxy = term[0] != "-" and term[1] in "RQCHT"
    answered = server != NO_SERVER and not by_proxy
    upstream = None if server == NO_SERVER else server
    return RequestEvent.seen(ts, upstream, status, max(total_ms, 0.0), answered=answered)


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot's release and the addresses of its ready instances."""

    release: str
    addresses: tuple[str, ...]


def assign_slots(
    slots: Mapping[str, Sequence[str]], previous: Mapping[str, str]
) -> dict[str, Slot]:
    """Letter -> Slot for the first two releases of ``slots`` (priority order) with at least
    one address; ``previous`` (release -> letter) keeps a release that stays in its slot, so a
    request stamped for it never changes backend while it is served. A new release takes a free
    letter, one that held no release before first (its leaving servers finish alone there).

    Worked examples (previous -> slots -> result)::

        {}                 {v1: [x], v2: [y]}        {a: v1 [x], b: v2 [y]}
        {v1: a, v2: b}     {v2: [y], v3: [z]}        {a: v3 [z], b: v2 [y]}
        {v1: a}            {v2: [y]}                 {b: v2 [y]}    (a just emptied)
        {}                 {v1: [], v2: [y], v3: [z], v4: [w]}    {a: v2 [y], b: v3 [z]}

    RouterError (nothing changed) for a release name or address the router cannot hold."""
    chosen: list[tuple[str, tuple[str, ...]]] = []
    for release, addresses in slots.items():
        problem = release_name_problem(release)
        if problem is not None:
            raise RouterError(f"release slots: {problem}")
        kept = tuple(dict.fromkeys(server_name(a) for a in addresses))
        if kept and len(chosen) < len(SLOT_LETTERS):
            chosen.append((release, kept))
    assigned = {
        previous[release]: Slot(release, kept)
        for release, kept in chosen
        if previous.get(release) in SLOT_LETTERS
    }
    held = set(previous.values())
    free = sorted((x for x in SLOT_LETTERS if x not in assigned), key=lambda x: (x in held, x))
    for release, kept in chosen:
        if all(slot.release != release for slot in assigned.values()):
            assigned[free.pop(0)] = Slot(release, kept)
    return dict(sorted(assigned.items()))


def slot_servers(slot: Slot | None) -> dict[str, tuple[str, int]]:
    """The slot backend's desired servers (weight 1 each; none for an empty slot)."""
    return {} if slot is None else {a: (a, 1) for a in slot.addresses}


def slot_map_text(assigned: Mapping[str, Slot]) -> str:
    """``slots.map`` as a restarted HAProxy loads it: ``v1 a`` per line."""
    return MARK_LINE + "".join(f"{slot.release} {x}\n" for x, slot in assigned.items())


def plan_slot_map(
    assigned: Mapping[str, Slot], current: Mapping[str, str], map_file: Path
) -> tuple[list[str], list[str]]:
    """(before, after) the slot backends' server changes: an entry no longer wanted (its release
    left, or is in another slot) is deleted before, so its requests fall back to the table
    while its servers leave; a new entry is added after, once its slot holds its servers.

    ``{a: v3}`` over a map ``{v1: a}`` -> ``(["del map F v1"], ["add map F v3 a"])``; the same
    assignment again -> ``([], [])``."""
    wanted = {slot.release: letter for letter, slot in assigned.items()}
    before = [
        f"del map {map_file} {release}"
        for release, letter in current.items()
        if wanted.get(release) != letter
    ]
    after = [
        f"add map {map_file} {release} {letter}"
        for release, letter in wanted.items()
        if current.get(release) != letter
    ]
    return before, after


def release_map_text(release: str | None) -> str:
    return MARK_LINE + ("" if release is None else f"{LIVE_KEY} {release}\n")


def plan_release(map_file: Path, current: str | None, release: str | None) -> list[str]:
    """Runtime-API commands that make the release map stamp ``release`` (None: no stamp).

    ``None -> v2``: ``add map F live v2``; ``v1 -> v2``: ``set map F live v2`` (one command:
    every request after it is stamped v2); ``v2 -> None``: ``del map F live``; same: nothing."""
    if current == release:
        return []
    if release is None:
        return [f"del map {map_file} {LIVE_KEY}"]
    verb = "add" if current is None else "set"
    return [f"{verb} map {map_file} {LIVE_KEY} {release}"]


def parse_map(text: str) -> dict[str, str]:
    """``show map <file>`` -> key -> value (lines ``0x55d1c2 key value``; the mark left out)."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("0x"):
            if fields[1] != MARK_KEY:
                entries[fields[1]] = fields[2]
        elif line.strip():
            raise RouterError(f"haproxy: unexpected 'show map' line {line!r}")
    return entries


def map_values(text: str) -> dict[str, str]:
    """A map file's text -> key -> value (blank lines and ``#`` comments skipped)."""
    pairs = (line.split(None, 1) for line in text.splitlines())
    return {p[0]: p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}


@dataclass(frozen=True, slots=True)
class Files:
    admin_socket: Path
    no_upstream_body: Path
    probe_map: Path
    """``table <hash>``: what the table probe answers; updated with ``set map`` on apply."""
    slots_map: Path | None = None
    """``release a|b`` (with ``release_slots``): which slot serves a stamped request."""
    release_map: Path | None = None
    """``live <release>`` (with ``release_stamp``): the stamp the edge sets."""


PROBE_KEY = "table"
FRONT_KEY = "front"
SERVING, DRAINING = "serving", "draining"


def probe_map_text(table_hash: str, front: str = SERVING) -> str:
    return f"{PROBE_KEY} {table_hash}\n{FRONT_KEY} {front}\n"


STAMPED = f"{{ req.hdr({RELEASE_HEADER.lower()}) -m len gt 0 }}"
NOT_SERVED = "release not served here"


def slot_usable(letter: str) -> str:
    """The condition under which a stamped request goes to slot ``letter``."""
    return f"{{ var(txn.slot) -m str {letter} }} {{ nbsrv({slot_backend(letter)}) gt 0 }}"


def front_rules(path: str | None, probe_map: Path, slots: bool = False) -> str:
    """The front health path (``RouterSettings.front_health``), answered by HAProxy itself and
    never logged (it is no request of any release): 503 while drained (the map's ``front`` key,
    set through the runtime API) or while no server is usable, 200 otherwise.

    With ``slots``, a non-empty ``X-Nonstop-Release: R`` asks about R instead (the edge's
    check, decision 0581): 200 while R's slot has a usable server, else 503 ``release not
    served here`` (a drained host still says ``draining`` first)."""
    if not path:
        return ""
    drained = f"{{ str({FRONT_KEY}),map({probe_map}) -m str {DRAINING} }}"
    empty = f"{{ nbsrv({BACKEND}) eq 0 }}"
    answer = f'http-request return content-type "{BODY_TYPE}"'
    ok = f'    {answer} status 200 string "{SERVING}" if front_health'
    release = ""
    if slots:
        release = "".join(f"{ok} {slot_usable(letter)}\n" for letter in SLOT_LETTERS)
        release += f'    {answer} status 503 string "{NOT_SERVED}" if front_health {STAMPED}\n'
    return (
        f"    acl front_health path {path}\n"
        "    http-request set-log-level silent if front_health\n"
        f'    {answer} status 503 string "{DRAINING}" if front_health {drained}\n'
        f"{release}"
        f'    {answer} status 503 string "no upstream" if front_health {empty}\n'
        f"{ok}\n"
    )


def stamp_rules(release_map: Path | None) -> str:
    """The edge's stamp, first in its frontend: a client's own header never gets through; the
    release map's ``live`` entry, when there is one, is set instead."""
    if release_map is None:
        return ""
    live = f"str({LIVE_KEY}),map({release_map})"
    return (
        f"    http-request del-header {RELEASE_HEADER}\n"
        f"    http-request set-header {RELEASE_HEADER} %[{live}] if {{ {live} -m found }}\n"
    )


def slot_rules(slots_map: Path | None) -> str:
    """Which slot a stamped request asks for (``txn.slot``; unset for a release without one)."""
    if slots_map is None:
        return ""
    header = RELEASE_HEADER.lower()
    return f"    http-request set-var(txn.slot) req.hdr({header}),map({slots_map}) if {STAMPED}\n"


def slot_routes(slots_map: Path | None) -> str:
    """After every rule that reads it, the stamp is removed (the upstream never sees it); a
    slot is used only while it has a usable server, else the table's routing as always."""
    if slots_map is None:
        return ""
    routes = "".join(
        f"    use_backend {slot_backend(letter)} if {slot_usable(letter)}\n"
        for letter in SLOT_LETTERS
    )
    return f"    http-request del-header {RELEASE_HEADER}\n{routes}"


def health_check(path: str | None, release_map: Path | None) -> str:
    """The backends' check: a TCP connect without ``path``; a GET of it, carrying the release
    map's stamp on the edge (``release_stamp``; HAProxy 2.6 sends no header while there is
    none), so a host whose slot for the stamped release is empty leaves rotation. HAProxy
    evaluates the header on every check: a ``set map`` is seen by the next one."""
    if not path:
        return ""  # a TCP connect check
    if release_map is None:
        return f"    option httpchk GET {path}\n"
    stamp = f"%[str({LIVE_KEY}),map({release_map},)]"
    send = f'http-check send meth GET uri {path} hdr {RELEASE_HEADER} "{stamp}"'
    return f"    option httpchk\n    {send}\n"


def build_config(
    servers: dict[str, tuple[str, int]],
    *,
    listen: str,
    files: Files,
    tuning: HAProxyTuning,
    front_health: str | None = None,
    slots: Mapping[str, Slot] | None = None,
) -> str:
    """The whole haproxy.cfg, starting with ``servers`` (name -> (address, weight)) in the
    backend and ``slots`` (letter -> Slot) in the slot backends, so a restarted HAProxy routes
    the last table and slots from its first request."""
    options = server_options(tuning)
    server_lines = _server_lines(servers, options)
    panic_lines = _server_lines(servers, "")
    slot_lines = {
        letter: _server_lines(slot_servers((slots or {}).get(letter)), options)
        for letter in SLOT_LETTERS
    }
    # Panic mode (decision 0570): every server in the table passed its readiness check before
    # it was routed (invariant 1), so "none passes its health check" on a busy machine is far
    # more often "all too slow to answer it within timeout check" than "all dead". Then the
    # unchecked twins take the requests instead of a 503 for every user; a dead one refuses
    # and the request is redispatched, a hung one stays out while any server is up.
    panic = f"{{ nbsrv({BACKEND}) eq 0 }} {{ nbsrv({PANIC_BACKEND}) gt 0 }}"
    check = health_check(tuning.health_path, files.release_map)
    front = front_rules(front_health, files.probe_map, slots=files.slots_map is not None)
    routes = slot_routes(files.slots_map)
    # The table probe (admin.py): answered from a map the runtime API updates on every apply.
    probe = f"{{ path {PROBE_PATH} }} {{ req.hdr({PROBE_HEADER}) -m str {PROBE_VALUE} }}"
    answer = f"%[str({PROBE_KEY}),map({files.probe_map})]"
    ms = _ms
    # stats timeout also ends an idle ``show events -w`` stream: 24 days (HAProxy's maximum
    # is 2^31 ms) keeps the request log stream open however quiet the service is.
    return f"""\
# Written by nonstop at start; routing changes go through the runtime API (no reloads).
global
    stats socket {files.admin_socket} mode 600 level admin
    stats timeout 24d
    log ring@{RING} local0 info
    hard-stop-after {ms(tuning.drain_timeout)}
    close-spread-time {ms(tuning.drain_timeout)}

ring {RING}
    description "nonstop request log"
    format raw
    maxlen 1024
    size {RING_BYTES}

defaults
    mode http
    log global
    timeout connect {ms(tuning.connect_timeout)}
    timeout client {ms(tuning.client_timeout)}
    timeout http-keep-alive {ms(tuning.client_timeout)}
    timeout server {ms(tuning.upstream_timeout)}
    timeout tunnel {ms(tuning.stream_idle_timeout)}
    timeout check {ms(tuning.health_timeout)}
    retries {tuning.retries}
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend {FRONTEND}
    bind {listen}
    log-format "{LOG_FORMAT}"
{stamp_rules(files.release_map)}    http-request set-log-level silent if {probe}
    http-request return status 200 content-type "{BODY_TYPE}" lf-string "{answer}" if {probe}
{slot_rules(files.slots_map)}{front}{routes}    use_backend {PANIC_BACKEND} if {panic}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
{check}    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    http-error status 503 content-type "{BODY_TYPE}" file {files.no_upstream_body}
{server_lines}
backend {PANIC_BACKEND}
    balance roundrobin
    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    http-error status 503 content-type "{BODY_TYPE}" file {files.no_upstream_body}
{panic_lines}{"".join(_slot_backend(x, check, files, slot_lines[x]) for x in SLOT_LETTERS)}"""


def _server_lines(servers: Mapping[str, tuple[str, int]], options: str) -> str:
    tail = f" {options}" if options else ""
    return "".join(
        f"    server {name} {address} weight {weight}{tail}\n"
        for name, (address, weight) in servers.items()
    )


def _slot_backend(letter: str, check: str, files: Files, server_lines: str) -> str:
    return f"""
backend {slot_backend(letter)}
    balance roundrobin
{check}    http-request disable-l7-retry if !METH_GET !METH_OPTIONS
    http-error status 503 content-type "{BODY_TYPE}" file {files.no_upstream_body}
{server_lines}"""


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"
