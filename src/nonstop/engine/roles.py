"""A release's process roles, resolved: ``[app]`` as ``web`` plus each ``[processes.<role>]``,
with queue presets applied and the traps of each queue library named (docs/workers.md)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal

from nonstop.config.schema import NonstopConfig, ProcessConfig, ReadinessConfig
from nonstop.drivers.runtime.base import StopRules

WEB = "web"


@dataclass(frozen=True, slots=True)
class Preset:
    stop_signal: str
    kill_mode: Literal["main", "group"]
    why: str


PRESETS: dict[str, Preset] = {
    "celery": Preset(
        "SIGTERM",
        "main",
        "SIGTERM to the main process is Celery's warm shutdown: it stops consuming and waits "
        "for running tasks; SIGTERM to the prefork pool children kills their tasks "
        "(WorkerLostError), so the group must not get it",
    ),
    "rq": Preset(
        "SIGTERM",
        "main",
        "one SIGTERM is RQ's warm shutdown (the work-horse finishes its job); a second one, or "
        "one to the horse, kills the job; the horse leaves the process group",
    ),
    "dramatiq": Preset(
        "SIGTERM",
        "main",
        "the main process forwards SIGTERM to its worker processes, which stop consuming and "
        "finish their messages; a group signal would reach them twice",
    ),
    "arq": Preset(
        "SIGTERM",
        "main",
        "arq's worker handles SIGTERM by cancelling its running jobs unless "
        "job_completion_wait lets them finish",
    ),
    "huey": Preset(
        "SIGINT",
        "main",
        "huey stops at once on SIGTERM, interrupting running tasks; SIGINT is its graceful "
        "shutdown (running tasks finish)",
    ),
}


@dataclass(frozen=True, slots=True)
class Role:
    """One process role of a release, every default resolved."""

    name: str
    command: str
    replicas: int
    env: dict[str, str]
    stop: StopRules
    readiness: ReadinessConfig | None
    """None for the web role: HTTP on ``health.path``."""
    quiet_grace: float = 0.0
    """Seconds from the quiet step's delivery to the stop signal (workers only)."""

    @property
    def web(self) -> bool:
        return self.name == WEB


def roles(config: NonstopConfig) -> dict[str, Role]:
    """Every role of ``config``, ``web`` first."""
    app = config.app
    web = Role(
        WEB,
        app.command,
        app.replicas,
        {},
        StopRules(
            app.stop_signal,
            float(app.stop_timeout),
            app.kill_mode,
            app.quiet_signal,
            app.quiet_command,
        ),
        None,
    )
    found = {WEB: web}
    for name, process in config.processes.items():
        found[name] = Role(
            name,
            process.command,
            process.replicas,
            dict(process.env),
            stop_rules(process),
            process.probe,
            process.grace,
        )
    return found


def role(config: NonstopConfig, name: str) -> Role:
    """The role ``name`` of ``config``; a role the release does not have runs nothing."""
    found = roles(config).get(name)
    if found is None:
        return Role(name, "true", 0, {}, StopRules(), ReadinessConfig(kind="none"))
    return found


def check_kind(config: NonstopConfig, name: str) -> str:
    """The kind of check that keeps watching role ``name``'s instances once ready (``status``
    shows it: with ``none``, a worker that stops working but not running goes unnoticed)."""
    readiness = role(config, name).readiness
    return "http" if readiness is None else readiness.kind


def stop_rules(process: ProcessConfig) -> StopRules:
    """The role's own settings over its queue preset's over the defaults."""
    preset = PRESETS.get(process.queue or "")
    signal = process.stop_signal or (preset.stop_signal if preset else "SIGTERM")
    if process.queue == "huey" and not process.stop_signal and _huey_graceful_term(process):
        signal = "SIGTERM"  # the consumer was told SIGTERM is its graceful signal
    kill_mode = process.kill_mode or (preset.kill_mode if preset else "main")
    return StopRules(
        signal,
        float(process.stop_timeout),
        kill_mode,
        process.quiet_signal,
        process.quiet_command,
    )


def warnings(config: NonstopConfig) -> list[str]:
    """The known traps of the roles' queue libraries, as sentences for the deploy's events."""
    found = []
    for name, process in config.processes.items():
        found += [f"processes.{name}: {text}" for text in queue_traps(process)]
    return found


def queue_traps(process: ProcessConfig) -> list[str]:
    """What in ``process`` is known to lose or repeat jobs with its queue library.

    >>> queue_traps(ProcessConfig(command="huey_consumer app.huey", queue="huey",
    ...     stop_signal="SIGTERM"))[0][:40]
    'huey stops at once on SIGTERM, interrupt'
    """
    rules, timeout = stop_rules(process), float(process.stop_timeout)
    traps = []
    if process.queue == "huey" and rules.signal == "SIGTERM" and not _huey_graceful_term(process):
        traps.append(
            "huey stops at once on SIGTERM, interrupting running tasks; use SIGINT (the preset) "
            "or run the consumer with -g TERM"
        )
    if process.queue == "celery" and process.env.get("REMAP_SIGTERM") == "SIGQUIT":
        traps.append(
            "REMAP_SIGTERM=SIGQUIT makes SIGTERM a cold shutdown that cancels running tasks"
        )
    if process.queue in ("celery", "dramatiq") and rules.kill_mode == "group":
        traps.append(
            f'kill_mode "group" sends {rules.signal} to the {process.queue} worker processes '
            'too: their running jobs are killed; use the preset\'s "main"'
        )
    if process.queue == "arq" and "job_completion_wait" not in process.command:
        traps.append(
            "arq cancels running jobs on SIGTERM unless WorkerSettings.job_completion_wait is "
            f"set (to less than stop_timeout {timeout:g}s); check your settings"
        )
    if process.queue == "celery":
        traps += _celery_traps(process, timeout)
    if process.queue == "dramatiq":
        traps += _dramatiq_timeout(process.command, timeout)
    if process.queue == "rq":
        traps.append(
            "an RQ worker stopped while it waits for a job (BLMOVE) can strand the next job in "
            "the queue's intermediate list; RQ's maintenance later marks it failed ('stuck in "
            "intermediate queue'): `rq requeue` it"
        )
    return traps


CELERY_QUIET_HINT = (
    'quiet_command = "celery -A <app> control cancel_consumer <queue> -d '
    '$NONSTOP_INSTANCE@$(hostname)" with the worker named -n $NONSTOP_INSTANCE@%h'
)


def _celery_traps(process: ProcessConfig, timeout: float) -> list[str]:
    """Celery's warm shutdown puts back every message its consumer holds unacknowledged
    (kombu's restore at channel close); with early acks a task is acknowledged only once the
    main process hears that a pool process accepted it, so one started just before the stop
    signal can be put back and run again on another worker (about 1 in 2,000 jobs measured).
    The way out is to hold nothing at the stop signal: a quiet step that cancels the
    consumer, a grace for what it holds, one message per free pool process."""
    traps = [
        "with a Redis or SQS broker, a task still running after the broker's "
        f"visibility_timeout is delivered again: keep it above stop_timeout {timeout:g}s "
        "plus your longest task"
    ]
    words = process.command.split()
    if not (process.quiet_signal or process.quiet_command):
        traps.append(
            "without a quiet step, tasks the worker holds at its stop signal (prefetched, or "
            "started but not yet acknowledged) are put back by its warm shutdown and can run "
            f"twice; set {CELERY_QUIET_HINT}, and quiet_grace above your longest task"
        )
    elif "cancel_consumer" in (process.quiet_command or "") and not (
        {"-n", "--hostname"} & set(words) or any(w.startswith("--hostname=") for w in words)
    ):
        traps.append(
            "cancel_consumer reaches every worker of the node name it is given, and without "
            "-n all instances on a host are celery@<host>: the quiet step would stop the new "
            "release's workers too; name each node -n $NONSTOP_INSTANCE@%h"
        )
    if not re.search(r"--prefetch-multiplier[=\s]+1\b", process.command):
        traps.append(
            "without --prefetch-multiplier 1 (and -O fair) a worker holds tasks no pool "
            "process runs yet: they start after its quiet step and its stop signal"
        )
    return traps


def _huey_graceful_term(process: ProcessConfig) -> bool:
    """The huey consumer runs with ``-g TERM`` / ``--graceful-signal TERM``."""
    return bool(re.search(r"(^|\s)(-g\s*|--graceful-signal[=\s])TERM\b", process.command))


def _dramatiq_timeout(command: str, timeout: float) -> list[str]:
    """Dramatiq waits ``--worker-shutdown-timeout`` ms (10 minutes by default) for its
    workers; longer than ``stop_timeout`` and they are killed with messages in hand."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    value = None
    for index, word in enumerate(words):
        match = re.fullmatch(r"--worker-shutdown-timeout(?:=(\d+))?", word)
        if match:
            value = match.group(1) or (words[index + 1] if index + 1 < len(words) else None)
    millis = int(value) if value and value.isdigit() else 600_000
    if millis / 1000 <= timeout:
        return []
    return [
        f"dramatiq's own shutdown timeout ({millis / 1000:g}s) is longer than stop_timeout "
        f"({timeout:g}s): its workers are killed with messages in hand; pass "
        f"--worker-shutdown-timeout {int(timeout * 1000) - 1000} or raise stop_timeout"
    ]
