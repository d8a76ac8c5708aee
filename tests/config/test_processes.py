"""``[processes.<role>]``: validation names the path, defaults resolve, queue presets apply and
their traps are named."""

from __future__ import annotations

import pytest

from nonstop.config import parse_config
from nonstop.drivers.runtime.base import StopRules
from nonstop.engine.roles import queue_traps, roles, warnings
from nonstop.errors import ConfigError

APP = '[app]\nname = "shop"\ncommand = "python3 app.py --port {port}"\n'
WORKER = APP + '[processes.worker]\ncommand = "rq worker"\n'

ERRORS = [
    (
        WORKER + 'readiness = { kind = "tcp" }\n',
        'processes.worker.readiness.kind: "tcp" probes a port, but the command has no "{port}"',
    ),
    (
        WORKER + 'readiness = { kind = "exec" }\n',
        'processes.worker.readiness.command: kind "exec" needs a "command" to run',
    ),
    (
        WORKER + 'readiness = { kind = "none", path = "/x" }\n',
        'processes.worker.readiness.path: only kind "http" probes a path, not "none"',
    ),
    (
        WORKER + 'readiness = { kind = "grpc" }\n',
        'processes.worker.readiness.kind: expected one of http, tcp, exec, none, got "grpc"',
    ),
    (
        APP + '[processes.Worker]\ncommand = "rq worker"\n',
        "processes.Worker: a role name is lower-case letters, digits and _",
    ),
    (APP + '[processes.web]\ncommand = "x"\n', "processes.web: the web role is [app]"),
    (APP + "[processes.worker]\nreplicas = 2\n", "processes.worker.command: required key"),
    (WORKER + 'queue = "sidekiq"\n', "processes.worker.queue: expected one of celery, rq,"),
    (WORKER + 'kill_mode = "all"\n', "processes.worker.kill_mode: expected one of main, group"),
    (WORKER + 'stop_signal = "TERM"\n', "processes.worker.stop_signal: expected one of SIGTERM"),
    (WORKER + "stop_timeout = -1\n", "processes.worker.stop_timeout: expected a non-negative"),
    (
        WORKER + 'quiet_signal = "SIGTSTP"\nquiet_command = "x"\n',
        'processes.worker.quiet_command: set "quiet_signal" or "quiet_command", not both',
    ),
    (WORKER + 'quiet_grace = "soon"\n', "processes.worker.quiet_grace: expected a duration such"),
    (WORKER + 'env = { "1X" = "y" }\n', 'processes.worker.env: "1X": not a valid variable name'),
    (WORKER + "replicas = 300\n", "processes.worker.replicas: expected a value <= 256"),
    (APP + 'kill_mode = "pool"\n', "app.kill_mode: expected one of main, group"),
    (
        APP + 'quiet_signal = "SIGUSR1"\nquiet_command = "x"\n',
        'app.quiet_command: set "quiet_signal" or "quiet_command", not both',
    ),
    (APP + 'quiet_signal = "USR1"\n', "app.quiet_signal: expected one of SIGTSTP"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS, ids=[e[1][:50] for e in ERRORS])
def test_bad_roles_name_the_path(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "stop"),
    [
        ("", StopRules("SIGTERM", 30.0, "main")),
        ('queue = "huey"\n', StopRules("SIGINT", 30.0, "main")),
        ('queue = "celery"\nstop_timeout = "2m"\n', StopRules("SIGTERM", 120.0, "main")),
        ('queue = "huey"\nstop_signal = "SIGQUIT"\n', StopRules("SIGQUIT", 30.0, "main")),
        (
            'kill_mode = "group"\nquiet_signal = "SIGTSTP"\n',
            StopRules("SIGTERM", 30.0, "group", "SIGTSTP"),
        ),
    ],
)
def test_stop_rules_resolve_role_then_preset_then_default(extra: str, stop: StopRules) -> None:
    assert roles(parse_config(WORKER + extra))["worker"].stop == stop


@pytest.mark.parametrize(
    ("extra", "grace"),
    [
        ("", 0.0),
        ('quiet_signal = "SIGTSTP"\n', 5.0),
        ('quiet_command = "celery control cancel_consumer q"\n', 5.0),
        ('quiet_signal = "SIGTSTP"\nquiet_grace = "20s"\n', 20.0),
        ('quiet_signal = "SIGTSTP"\nquiet_grace = 0\n', 0.0),
    ],
)
def test_quiet_grace_defaults_to_5s_with_a_quiet_step(extra: str, grace: float) -> None:
    assert roles(parse_config(WORKER + extra))["worker"].quiet_grace == grace


def test_web_role_is_app_and_keeps_its_defaults() -> None:
    web = roles(parse_config(APP))["web"]
    assert (web.command, web.replicas, web.readiness) == ("python3 app.py --port {port}", 1, None)
    assert web.stop == StopRules("SIGTERM", 10.0, "main")


def test_the_web_roles_quiet_step_is_apps() -> None:
    web = roles(parse_config(APP + 'quiet_signal = "SIGUSR1"\n'))["web"]
    assert web.stop == StopRules("SIGTERM", 10.0, "main", "SIGUSR1")
    web = roles(parse_config(APP + 'quiet_command = "touch quiet"\n'))["web"]
    assert web.stop == StopRules("SIGTERM", 10.0, "main", None, "touch quiet")


def test_readiness_defaults_to_tcp_with_a_port_else_none() -> None:
    config = parse_config(WORKER + '[processes.metrics]\ncommand = "exporter --port {port}"\n')
    found = roles(config)
    assert found["worker"].readiness is not None
    assert found["worker"].readiness.kind == "none"
    assert found["metrics"].readiness is not None
    assert found["metrics"].readiness.kind == "tcp"


@pytest.mark.parametrize(
    ("extra", "trap"),
    [
        ('queue = "huey"\nstop_signal = "SIGTERM"\n', "huey stops at once on SIGTERM"),
        ('queue = "arq"\n', "arq cancels running jobs on SIGTERM unless"),
        ('queue = "rq"\n', "can strand the next job in the queue's intermediate list"),
        ('queue = "celery"\n', "visibility_timeout is delivered again"),
        ('queue = "celery"\n', "without a quiet step, tasks the worker holds at its stop"),
        ('queue = "celery"\n', "without --prefetch-multiplier 1 (and -O fair)"),
        (
            'queue = "celery"\ncommand = "celery -A a worker"\n'
            'quiet_command = "celery -A a control cancel_consumer q -d x"\n',
            "without -n all instances on a host are celery@<host>",
        ),
        (
            'queue = "celery"\nkill_mode = "group"\n',
            'kill_mode "group" sends SIGTERM to the celery',
        ),
        ('queue = "dramatiq"\n', "dramatiq's own shutdown timeout (600s) is longer than"),
        (
            'queue = "dramatiq"\ncommand = "dramatiq app --worker-shutdown-timeout 60000"\n',
            "dramatiq's own shutdown timeout (60s) is longer than stop_timeout (30s)",
        ),
    ],
)
def test_queue_traps_are_named(extra: str, trap: str) -> None:
    text = APP + "[processes.worker]\n" + extra
    if "command" not in extra:
        text += 'command = "worker"\n'
    found = warnings(parse_config(text))
    assert any(trap in line for line in found), found
    assert all(line.startswith("processes.worker: ") for line in found)


@pytest.mark.parametrize(
    "extra",
    [
        'queue = "huey"\n',
        'queue = "dramatiq"\ncommand = "dramatiq app --worker-shutdown-timeout=25000"\n',
        'command = "x"\n',
    ],
)
def test_presets_used_as_meant_have_no_trap(extra: str) -> None:
    text = APP + "[processes.worker]\n" + extra
    if "command" not in extra:
        text += 'command = "worker"\n'
    process = parse_config(text).processes["worker"]
    assert queue_traps(process) == []


@pytest.mark.parametrize(
    ("command", "signal"),
    [
        ("huey_consumer app.huey", "SIGINT"),
        ("huey_consumer app.huey -g TERM", "SIGTERM"),
        ("huey_consumer app.huey --graceful-signal=TERM -w 4", "SIGTERM"),
        ("huey_consumer app.huey -gTERM", "SIGTERM"),
    ],
)
def test_huey_preset_follows_the_consumers_graceful_signal(command: str, signal: str) -> None:
    text = APP + f'[processes.worker]\ncommand = "{command}"\nqueue = "huey"\n'
    config = parse_config(text)
    assert roles(config)["worker"].stop.signal == signal
    assert queue_traps(config.processes["worker"]) == []


def test_celery_as_recommended_has_only_the_visibility_timeout_trap() -> None:
    text = WORKER.replace(
        '"rq worker"',
        '"celery -A a worker -O fair --prefetch-multiplier 1 -n $NONSTOP_INSTANCE@%h"',
    ) + (
        'queue = "celery"\nquiet_command = "celery -A a control cancel_consumer celery '
        '-d $NONSTOP_INSTANCE@$(hostname)"\n'
    )
    traps = queue_traps(parse_config(text).processes["worker"])
    assert len(traps) == 1, traps
    assert "visibility_timeout" in traps[0]


def test_celery_remapped_sigterm_is_a_trap() -> None:
    text = WORKER + 'queue = "celery"\nenv = { REMAP_SIGTERM = "SIGQUIT" }\n'
    found = warnings(parse_config(text))
    assert any("cold shutdown" in line for line in found), found
