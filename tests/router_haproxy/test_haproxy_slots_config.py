"""The pure parts of release slots and the edge's stamp (decision 0581), from tables: which
release gets which slot, the map commands around the slots' server changes, the config text."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from nonstop.drivers.router.haproxy_config import (
    Files,
    HAProxyTuning,
    Slot,
    assign_slots,
    build_config,
    health_check,
    map_values,
    parse_map,
    plan_release,
    plan_slot_map,
    probe_map_text,
    release_map_text,
    slot_map_text,
)
from nonstop.errors import RouterError
from nonstop_testing import require_binary

X, Y, Z, W = "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003", "127.0.0.1:8004"
F = Path("/s/slots.map")


@pytest.mark.parametrize(
    ("previous", "slots", "expected"),
    [
        ({}, {}, {}),
        ({}, {"v1": [X], "v2": [Y]}, {"a": Slot("v1", (X,)), "b": Slot("v2", (Y,))}),
        # v2 stays in b; v3 takes the slot v1 left
        (
            {"v1": "a", "v2": "b"},
            {"v2": [Y], "v3": [Z]},
            {"a": Slot("v3", (Z,)), "b": Slot("v2", (Y,))},
        ),
        # v1 left a just now: v2 goes to b, so v1's leaving servers finish alone in a
        ({"v1": "a"}, {"v2": [Y]}, {"b": Slot("v2", (Y,))}),
        ({"v1": "b"}, {"v1": [X, Z]}, {"b": Slot("v1", (X, Z))}),
        # only releases with an address count; only the first two of them get a slot
        (
            {},
            {"v1": [], "v2": [Y], "v3": [Z], "v4": [W]},
            {"a": Slot("v2", (Y,)), "b": Slot("v3", (Z,))},
        ),
        # an address given twice is one server
        ({}, {"v1": [X, X]}, {"a": Slot("v1", (X,))}),
        # the same slots again: the same assignment (idempotent)
        (
            {"v2": "a", "v1": "b"},
            {"v1": [X], "v2": [Y]},
            {"a": Slot("v2", (Y,)), "b": Slot("v1", (X,))},
        ),
    ],
)
def test_assign_slots(
    previous: Mapping[str, str],
    slots: Mapping[str, Sequence[str]],
    expected: dict[str, Slot],
) -> None:
    assert assign_slots(slots, previous) == expected


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        ({"v 1": [X]}, r'release slots: release name "v 1" is not valid'),
        ({"v1;show": [X]}, r"release name \"v1;show\" is not valid"),
        ({"v1": ["[::1]:80"]}, r"HAProxy server names allow only"),
    ],
)
def test_a_bad_release_or_address_is_refused_by_name(
    slots: Mapping[str, Sequence[str]], message: str
) -> None:
    with pytest.raises(RouterError, match=message):
        assign_slots(slots, {})


@pytest.mark.parametrize(
    ("assigned", "current", "before", "after"),
    [
        ({}, {}, [], []),
        ({"a": Slot("v1", (X,))}, {}, [], [f"add map {F} v1 a"]),
        ({"a": Slot("v1", (X,))}, {"v1": "a"}, [], []),
        # v1 leaves before its servers do; v3 comes after its servers are in slot a
        ({"a": Slot("v3", (Z,))}, {"v1": "a"}, [f"del map {F} v1"], [f"add map {F} v3 a"]),
        ({}, {"v1": "a", "v2": "b"}, [f"del map {F} v1", f"del map {F} v2"], []),
        # an entry pointing at the wrong slot (never made by assign_slots; a hand edit) is redone
        ({"b": Slot("v1", (X,))}, {"v1": "a"}, [f"del map {F} v1"], [f"add map {F} v1 b"]),
    ],
)
def test_plan_slot_map(
    assigned: dict[str, Slot], current: dict[str, str], before: list[str], after: list[str]
) -> None:
    assert plan_slot_map(assigned, current, F) == (before, after)


@pytest.mark.parametrize(
    ("current", "release", "commands"),
    [
        (None, None, []),
        (None, "v2", ["add map /e/release.map live v2"]),
        ("v1", "v2", ["set map /e/release.map live v2"]),
        ("v2", "v2", []),
        ("v2", None, ["del map /e/release.map live"]),
    ],
)
def test_plan_release(current: str | None, release: str | None, commands: list[str]) -> None:
    assert plan_release(Path("/e/release.map"), current, release) == commands


def test_map_texts_and_replies() -> None:
    assigned = {"a": Slot("v3", (Z,)), "b": Slot("v2", (Y,))}
    assert slot_map_text(assigned) == ".nonstop present\nv3 a\nv2 b\n"
    assert map_values(release_map_text("v2")) == {".nonstop": "present", "live": "v2"}
    assert release_map_text("v2") == ".nonstop present\nlive v2\n"
    assert release_map_text(None) == ".nonstop present\n"
    assert map_values("# comment\n\nlive v2\n") == {"live": "v2"}
    assert parse_map("0x5d0 .nonstop present\n0x5d1 v3 a\n0x5d2 v2 b\n") == {"v3": "a", "v2": "b"}
    assert parse_map("") == {}
    with pytest.raises(RouterError, match="unexpected 'show map' line"):
        parse_map("Unknown map identifier.")


def test_health_checks_carry_the_stamp_only_on_the_edge() -> None:
    assert health_check(None, Path("/e/release.map")) == ""
    assert health_check("/lb", None) == "    option httpchk GET /lb\n"
    assert health_check("/lb", Path("/e/release.map")) == (
        "    option httpchk\n"
        '    http-check send meth GET uri /lb hdr X-Nonstop-Release "%[str(live),'
        'map(/e/release.map,)]"\n'
    )


def _files(tmp_path: Path, *, slots: bool = False, stamp: bool = False) -> Files:
    files = Files(
        tmp_path / "admin.sock",
        tmp_path / "body.txt",
        tmp_path / "probe.map",
        slots_map=tmp_path / "slots.map" if slots else None,
        release_map=tmp_path / "release.map" if stamp else None,
    )
    files.no_upstream_body.write_text("503\n")
    files.probe_map.write_text(probe_map_text("0123456789abcdef"))
    for path in (files.slots_map, files.release_map):
        if path is not None:
            path.write_text("")
    return files


def _valid(tmp_path: Path, text: str) -> None:
    binary = require_binary("haproxy", "/usr/sbin/haproxy")
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    done = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_without_slots_the_slot_backends_are_declared_empty_and_no_rule_reads_the_header(
    tmp_path: Path,
) -> None:
    files = _files(tmp_path)
    text = build_config({X: (X, 1)}, listen="127.0.0.1:8080", files=files, tuning=HAProxyTuning())
    assert "backend nonstop_slot_a\n" in text
    assert "backend nonstop_slot_b\n" in text
    assert "x-nonstop-release" not in text.lower()
    slot_a = text[text.index("backend nonstop_slot_a\n") : text.index("backend nonstop_slot_b")]
    assert "server " not in slot_a
    _valid(tmp_path, text)


def test_the_host_rules_with_slots(tmp_path: Path) -> None:
    files = _files(tmp_path, slots=True)
    slots = {"b": Slot("v2", (Y, Z))}
    text = build_config(
        {X: (X, 1)},
        listen="127.0.0.1:8080",
        files=files,
        tuning=HAProxyTuning(health_path="/health"),
        front_health="/lb",
        slots=slots,
    )
    m = files.slots_map
    a = "{ var(txn.slot) -m str a } { nbsrv(nonstop_slot_a) gt 0 }"
    b = "{ var(txn.slot) -m str b } { nbsrv(nonstop_slot_b) gt 0 }"
    answer = 'http-request return content-type "text/plain; charset=utf-8"'
    assert (
        "    http-request set-var(txn.slot) req.hdr(x-nonstop-release),"
        f"map({m}) if {{ req.hdr(x-nonstop-release) -m len gt 0 }}\n"
        "    acl front_health path /lb\n"
        "    http-request set-log-level silent if front_health\n"
        f'    {answer} status 503 string "draining" if front_health '
        f"{{ str(front),map({files.probe_map}) -m str draining }}\n"
        f'    {answer} status 200 string "serving" if front_health {a}\n'
        f'    {answer} status 200 string "serving" if front_health {b}\n'
        f'    {answer} status 503 string "release not served here" if front_health '
        "{ req.hdr(x-nonstop-release) -m len gt 0 }\n"
        f'    {answer} status 503 string "no upstream" if front_health '
        "{ nbsrv(nonstop_app) eq 0 }\n"
        f'    {answer} status 200 string "serving" if front_health\n'
        "    http-request del-header X-Nonstop-Release\n"
        f"    use_backend nonstop_slot_a if {a}\n"
        f"    use_backend nonstop_slot_b if {b}\n"
        "    use_backend nonstop_panic if "
    ) in text
    slot_b = text[text.index("backend nonstop_slot_b\n") :]
    assert "    option httpchk GET /health\n" in slot_b
    assert f"    server {Y} {Y} weight 1 check inter 500ms fall 2 rise 1 " in slot_b
    assert f"    server {Z} {Z} weight 1 check " in slot_b
    assert "http-error status 503" in slot_b
    _valid(tmp_path, text)


def test_the_edge_rules_with_the_stamp(tmp_path: Path) -> None:
    files = _files(tmp_path, stamp=True)
    text = build_config(
        {X: (X, 1)},
        listen="127.0.0.1:8080",
        files=files,
        tuning=HAProxyTuning(health_path="/lb"),
    )
    live = f"str(live),map({files.release_map})"
    assert (
        '    log-format "nonstop-req %Ts %ms %ST %Tt %ts %s"\n'
        "    http-request del-header X-Nonstop-Release\n"
        f"    http-request set-header X-Nonstop-Release %[{live}] if {{ {live} -m found }}\n"
    ) in text
    app = text[text.index("\nbackend nonstop_app\n") : text.index("\nbackend nonstop_panic")]
    assert "http-check send meth GET uri /lb hdr X-Nonstop-Release" in app
    _valid(tmp_path, text)
