"""Flag documents read within bounds: the CLI's import and the agent's route share them."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from e2e.harness import free_port
from flags.conftest import FakeErrors, ServiceThread
from nonstop.cli.main import main
from nonstop.errors import UsageError
from nonstop.flags.limits import MAX_DEPTH, count, load_json, name_problem

DEEP = "[" * 5000 + "]" * 5000
BAD_JSON = [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text (byte 0): is it a binary file?"),
    ("1" * 5001, "not valid JSON: Exceeds the limit"),
    (DEEP, f"nested more than {MAX_DEPTH} deep"),
    ("[" * 65 + "]" * 65, f"nested more than {MAX_DEPTH} deep"),
    ('{"a": NaN}', "not valid JSON: NaN is not a number JSON allows"),
    ('{"a": Infinity}', "Infinity is not a number JSON allows"),
    ("{", "not valid JSON: Expecting property name"),
    ("x" * (8 * 1024 * 1024 + 1), "bytes is more than the 8388608 allowed"),
]


@pytest.mark.parametrize(("data", "message"), BAD_JSON)
def test_bad_json_is_a_usage_error(data: str | bytes, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_json(data, "flags.json")
    assert str(caught.value).startswith("flags.json: ")
    assert message in str(caught.value)


def test_json_within_bounds_loads() -> None:
    assert load_json("[" * 64 + "]" * 64, "x") is not None
    assert load_json(b'{"features": []}', "x") == {"features": []}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("checkout", True),
        ("new-ui.v2~beta_1", True),
        ("a" * 100, True),
        ("a" * 101, False),
        ("../../etc/passwd", False),
        ("v9\n", False),
        ("", False),
        ("-x", False),
        (None, False),
    ],
)
def test_flag_names(name: object, ok: bool) -> None:
    assert (name_problem(name) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [(0, True), (2**31 - 1, True), (2**31, False), (-1, False), (True, False)]
)
def test_counts(value: object, ok: bool) -> None:
    if ok:
        assert count(value, "x") == value
    else:
        with pytest.raises(UsageError):
            count(value, "x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02\xff", "not UTF-8 text"),
        (b"1" * 5001, "not valid JSON: Exceeds the limit"),
        (DEEP.encode(), "nested more than 64 deep"),
        (b'{"features": [{"name": "../../etc/passwd", "enabled": true}]}', "features[0].name"),
        (b'{"features": [{"name": "' + b"a" * 10_000 + b'", "enabled": true}]}', "expected"),
    ],
)
def test_cli_import_refuses_cleanly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    server = ServiceThread(tmp_path, None, FakeErrors()).start()
    try:
        monkeypatch.setenv("NONSTOP_PROJECT", str(tmp_path))
        (tmp_path / "nonstop.toml").write_text('[app]\nname = "x"\ncommand = "x {port}"\n')
        file = tmp_path / "flags.json"
        file.write_bytes(content)
        with pytest.raises(SystemExit) as exited:
            main(["flags", "import", str(file)])
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert message in err
        assert "Traceback" not in err
        assert server.call("GET", "/v1/flags-document") == {"version": 1, "features": []}
    finally:
        server.stop()


def test_cli_import_refuses_a_fifo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "flags.json"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exited:
        main(["flags", "import", str(fifo)])
    assert exited.value.code == 2
    assert "not a regular file" in capsys.readouterr().err


def test_api_import_refuses_deep_nesting_and_huge_integers(tmp_path: Path) -> None:
    """Straight to the route, without the CLI: the same bounds, a 400, nothing changed."""
    server = ServiceThread(tmp_path, None, FakeErrors()).start()
    try:
        for raw in (DEEP, '{"document": {"features": [' + "1" * 5001 + "]}}", "\xff"):
            status, body = _put_raw(server, "/v1/flags-document", raw.encode("latin-1"))
            assert status == 400, body
            assert body.startswith(b'{"error": "import: ')
        assert server.call("GET", "/v1/flags-document") == {"version": 1, "features": []}
    finally:
        server.stop()


def _put_raw(server: ServiceThread, path: str, body: bytes) -> tuple[int, bytes]:
    """A request with a body sent as it is, over the agent's unix socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.paths.socket))
    conn = http.client.HTTPConnection("agent", timeout=10)
    conn.sock = sock
    token = server.paths.read_or_create_token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request("PUT", path, body=body, headers=headers)
    response = conn.getresponse()
    try:
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "raw",
    [DEEP.encode(), b'{"bucket": {"toggles": {"a": {"yes": ' + b"1" * 5001 + b"}}}}", b"\xff"],
)
def test_client_api_bodies_are_bounded_too(tmp_path: Path, raw: bytes) -> None:
    """SDK posts (metrics, register) go through the same reader: a 400, never a 500."""
    server = ServiceThread(tmp_path, f"127.0.0.1:{free_port()}", FakeErrors()).start()
    try:
        token = server.call("POST", "/v1/flags-tokens", {"name": "t"})["token"]
        for path in ("/client/metrics", "/client/register"):
            request = urllib.request.Request(
                server.url + path,
                data=raw,
                method="POST",
                headers={"Authorization": token, "Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            assert caught.value.code == 400
            assert caught.value.read().startswith(b'{"error": "request body: ')
    finally:
        server.stop()
