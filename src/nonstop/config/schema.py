"""The nonstop.toml schema (pydantic v2).

Every model forbids unknown keys, so a typo is an error that names its path
(``strategy.canary.steps[2].wieght: unknown key``) rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nonstop.config.fleet import FleetConfig
from nonstop.config.units import ByteSize, CountOrPercent, Duration
from nonstop.config.validate import env_problems, excluded_path_problem

SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL")
QUIET_SIGNALS = ("SIGTSTP", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def one_quiet_step(quiet_signal: str | None, quiet_command: str | None) -> None:
    if quiet_signal and quiet_command:
        raise ValueError('quiet_command: set "quiet_signal" or "quiet_command", not both')


class AppConfig(Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    command: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=1, le=256)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    build: str | None = None
    stop_signal: Literal[SIGNALS] = "SIGTERM"  # type: ignore[valid-type]
    stop_timeout: Duration = 10.0
    """Grace period between the stop signal and SIGKILL."""
    kill_mode: Literal["main", "group"] = "main"
    """Who gets ``stop_signal``: the main process, or its whole process group (docs/workers.md)."""
    drain_timeout: Duration = 30.0
    """Longest wait for in-flight requests and long-lived connections after traffic moved off."""
    quiet_signal: Literal[QUIET_SIGNALS] | None = None  # type: ignore[valid-type]
    """Sent once to a release kept warm for rollback when its drain deadline passes: close
    long-lived connections (WebSockets), keep answering HTTP (docs/websockets.md)."""
    quiet_command: str | None = None
    """Run instead of a quiet signal (``$NONSTOP_PID`` is the instance's main process)."""
    copy_include: list[str] = Field(default_factory=list)
    """Names left out of a release copy by default (``.venv``, ``node_modules``...) to copy."""
    copy_exclude: list[str] = Field(default_factory=list)
    """More names or glob patterns to leave out of the release copy (docs/config.md)."""

    @field_validator("command")
    @classmethod
    def _needs_port(cls, value: str) -> str:
        if "{port}" not in value:
            raise ValueError(
                'must contain the "{port}" placeholder, e.g. "python3 app.py --port {port}"'
            )
        return value

    @model_validator(mode="after")
    def _copied(self) -> AppConfig:
        problem = excluded_path_problem(
            self.command, self.cwd, self.copy_include, self.copy_exclude
        )
        if problem is not None and not self.build:  # a build may create it in the release
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _one_quiet(self) -> AppConfig:
        one_quiet_step(self.quiet_signal, self.quiet_command)
        return self

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: object) -> object:
        problems = env_problems(value)
        if problems:
            key, message = problems[0]
            raise ValueError(f"{key}: {message}" if key else message)
        return value


class HealthConfig(Model):
    path: str = "/health"
    interval: Duration = 0.5
    timeout: Duration = 2.0
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)
    start_period: Duration = 60.0
    """How long a new instance may take to become ready before the rollout gives up on it."""
    liveness_interval: Duration = 2.0
    liveness_failure_threshold: int = Field(default=5, ge=1)
    crash_loop_restarts: int = Field(default=3, ge=1)
    """Restarts within ``crash_loop_window`` that make an instance crash-looping: it counts as
    failed (not ready), and a rollout that needs it gives up, until it stays up a window."""
    crash_loop_window: Duration = 120.0

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'expected a path starting with "/", got "{value}"')
        return value


class RouterConfig(Model):
    listen: str = "127.0.0.1:8080"
    kind: Literal["caddy", "haproxy", "nginx"] = "caddy"
    upstream_timeout: Duration = Field(default=30.0, gt=0)
    """How long the router waits for an instance's response headers (HAProxy: for any byte)
    before it answers 504, or retries an idempotent request elsewhere (docs/router.md)."""
    stream_grace: Duration | None = Field(default=None, gt=0)
    """How long a WebSocket or stream may outlive the routing change that removed its instance
    before the router closes it; unset: until the instance (stopped at its drain deadline) or
    the client ends it (docs/websockets.md, decision 0460)."""
    stream_idle_timeout: Duration = Field(default=3600.0, gt=0)
    """How long a WebSocket may stay silent before the router closes it (HAProxy, nginx;
    Caddy never closes an idle stream). Requests keep ``upstream_timeout`` (docs/websockets.md)."""
    front_health: str | None = None
    """A path the router answers itself for a load balancer in front of this host: 200 while
    the host serves, 503 while it is drained (``nonstop fleet``'s external front, docs/fleet.md).
    HAProxy only; unset: every path goes to the instances."""
    release_slots: bool = False
    """Serve a request stamped ``X-Nonstop-Release: <release>`` (by an edge in front of the
    fleet) from that release's ready instances - the active one, the candidate held ready, or
    the previous one kept warm - and every other request from the weighted table as always
    (docs/router-haproxy.md, decision 0581). HAProxy only; read at ``nonstop up``."""

    @field_validator("front_health")
    @classmethod
    def _front_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f'expected a path starting with "/", got "{value}"')
        return value

    @model_validator(mode="after")
    def _front_kind(self) -> RouterConfig:
        if self.front_health is not None and self.kind != "haproxy":
            raise ValueError(
                f'front_health: answered by the haproxy router only (kind is "{self.kind}"): '
                'set kind = "haproxy"'
            )
        if self.release_slots and self.kind != "haproxy":
            raise ValueError(
                f'release_slots: served by the haproxy router only (kind is "{self.kind}"): '
                'set kind = "haproxy"'
            )
        return self

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'expected "host:port" such as "127.0.0.1:8080", got "{value}"')
        return value


class RuntimeConfig(Model):
    kind: Literal["local"] = "local"
    """Where instances run: "local" processes on this machine (the only kind so far; the
    registry in drivers/runtime/registry.py lists the kinds, decision 0500)."""


class WatchConfig(Model):
    """After traffic reaches 100%: watch the new release and roll back on its own."""

    duration: Duration = 300.0
    max_error_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    min_requests: int = Field(default=20, ge=1)
    check_duration: Duration = 10.0
    """After a switch that has no watch (a first deploy, a rollback): for this long (at most
    ``duration``) its instances must stay up - none restarted - and serve within budget."""


class BlueGreenConfig(Model):
    smoke: str | None = None
    smoke_timeout: Duration = 60.0
    auto_promote: bool = True
    keep_previous: Duration = 300.0


class RollingConfig(Model):
    max_surge: CountOrPercent = Field(default="25%", validate_default=True)
    max_unavailable: CountOrPercent = Field(default=0, validate_default=True)
    min_ready: Duration = 0.0
    progress_deadline: Duration | None = None
    """Overrides ``strategy.progress_deadline`` for rolling updates (kept for old files)."""


class CheckConfig(Model):
    """One analysis check: a measured value against a threshold."""

    metric: Literal["error_rate", "latency", "query"]
    max: float | None = None
    min: float | None = None
    percentile: float = Field(default=99.0, gt=0, lt=100)
    query: str | None = None
    min_samples: int = Field(default=50, ge=1)
    failure_limit: int = Field(default=1, ge=1)
    interval: Duration = 10.0
    confidence: float = Field(default=0.95, ge=0.0, lt=1.0)
    """``error_rate``: a window fails when the rate is above ``max`` with this confidence
    and passes when it is below with it; in between it is inconclusive and pools. 0: the raw
    rate is compared (one error in a small window fails it). ``latency``: the same for the
    share of requests slower than ``max`` against ``1 - percentile``, where the metrics source
    counts them (else, and at 0, the percentile is compared as measured)."""
    undecided: Literal["pause", "pass"] = "pause"
    """``error_rate`` with a ``confidence``: what the end of a step does when the step's whole
    data still cannot tell the rate from ``max``: ``pause`` for a person (after measuring as
    long again as the pause), or ``pass`` ("not shown above max", said in the verdict)."""

    @model_validator(mode="after")
    def _bounds(self) -> CheckConfig:
        if self.max is None and self.min is None:
            raise ValueError('needs "max" or "min"')
        if self.metric == "query" and not self.query:
            raise ValueError('metric "query" needs a "query" (a PromQL template)')
        return self


class CanaryStep(Model):
    weight: int | None = Field(default=None, ge=0, le=100)
    pause: Duration | dict[str, Any] | None = None
    """A duration, or ``{}`` to wait for ``nonstop promote``."""
    analysis: list[CheckConfig] | None = None

    @field_validator("pause")
    @classmethod
    def _empty_table(cls, value: object) -> object:
        if isinstance(value, dict) and value:
            raise ValueError("expected a duration, or {} to wait for `nonstop promote`")
        return value

    @model_validator(mode="after")
    def _something(self) -> CanaryStep:
        if self.weight is None and self.pause is None and self.analysis is None:
            raise ValueError('a step needs "weight", "pause" or "analysis"')
        return self


class CanaryConfig(Model):
    preset: Literal["progressive", "quick"] | None = None
    steps: list[CanaryStep] = Field(default_factory=list)
    analysis: list[CheckConfig] = Field(default_factory=list)
    """Checks that run throughout every step, beside any step's own."""
    weight_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    sequential: bool = True
    """Compare canary and stable error rates with an always-valid sequential test."""

    @model_validator(mode="after")
    def _increasing(self) -> CanaryConfig:
        last = 0
        for index, step in enumerate(self.steps):
            if step.weight is None:
                continue
            if step.weight < last:
                got = f"got {step.weight} after {last}"
                raise ValueError(f"steps[{index}].weight: weights must not decrease, {got}")
            last = step.weight
        if not self.steps and self.preset is None:
            raise ValueError('needs "steps" or a "preset" (progressive, quick)')
        return self


class StrategyConfig(Model):
    kind: Literal["bluegreen", "rolling", "canary"] = "bluegreen"
    progress_deadline: Duration = 600.0
    """Longest wait without progress in any phase that waits for instances (starting,
    scaling, promoting, rolling, rolling back): then the rollout gives up, naming the phase and
    what was missing."""
    bluegreen: BlueGreenConfig = Field(default_factory=BlueGreenConfig)
    rolling: RollingConfig = Field(default_factory=RollingConfig)
    canary: CanaryConfig | None = None

    @model_validator(mode="after")
    def _canary_needs_steps(self) -> StrategyConfig:
        if self.kind == "canary" and self.canary is None:
            raise ValueError('kind "canary" needs a [strategy.canary] table with steps or a preset')
        return self


class MetricsConfig(Model):
    provider: Literal["router", "prometheus"] = "router"
    prometheus_url: str | None = None
    error_rate_query: str | None = None
    latency_query: str | None = None
    token: str | None = Field(default=None, min_length=1)
    """Bearer token every ``/metrics`` scrape must carry (``$VAR`` reads it from the
    environment when the agent starts); unset: ``/metrics`` is open on the agent's own
    listeners and not served on the dashboard's (docs/metrics.md)."""

    @model_validator(mode="after")
    def _prometheus_url(self) -> MetricsConfig:
        if self.provider == "prometheus" and not self.prometheus_url:
            raise ValueError('provider "prometheus" needs "prometheus_url"')
        return self


NOTIFY_EVENTS = (
    "rollout_started",
    "step_reached",
    "paused",
    "promoted",
    "rolled_back",
    "flag_disabled",
)


class NotifyConfig(Model):
    """One ``[[notify]]`` webhook (docs/notifications.md)."""

    url: str
    format: Literal["json", "slack"] = "json"
    events: list[Literal[NOTIFY_EVENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(NOTIFY_EVENTS), min_length=1
    )
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (``$VAR`` values are read from the environment)."""
    secret: str | None = Field(default=None, min_length=1)
    """Signs each body: ``X-Nonstop-Signature: sha256=HMAC(secret, timestamp + "." + body)``
    (``$VAR`` reads it from the environment)."""
    timeout: Duration = Field(default=5.0, gt=0)
    retries: int = Field(default=8, ge=0, le=50)
    backoff: Duration = Field(default=1.0, gt=0)
    """First retry delay; doubled per attempt up to ``max_backoff``, with jitter."""
    max_backoff: Duration = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or rest.startswith("/"):
            raise ValueError(f'expected an "http://" or "https://" URL, got "{value}"')
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f'"{name}" is not a valid header name')
            if "\r" in text or "\n" in text:
                raise ValueError(f"{name}: a header value cannot contain a line break")
        return value


class MigrationsConfig(Model):
    dir: str = "migrations"
    database_url: str | None = None
    """A libpq URL; ``$VAR`` reads it from the environment (default ``$DATABASE_URL``)."""
    lock_timeout: Duration = 2.0
    pg_version: int = Field(default=15, ge=9, le=20)
    tool: Literal["sql", "alembic", "django"] = "sql"
    """Who writes the migrations: SQL files under ``dir``, or an Alembic or Django project at
    ``project`` whose own history table (alembic_version, django_migrations) says what ran."""
    project: str = "."
    """alembic/django: the directory with alembic.ini / manage.py, relative to nonstop.toml."""
    settings: str | None = None
    """``tool = "django"``: the settings module (default: manage.py's)."""
    python: str | None = None
    """alembic/django: the project's Python (default: its .venv/bin/python, or nonstop's)."""


class FlagsConfig(Model):
    listen: str | None = None
    """TCP address of the Unleash-compatible client API, e.g. ``127.0.0.1:4242``."""
    refresh_interval: Duration = 15.0


class AgentConfig(Model):
    listen: str | None = None
    """``unix:PATH`` (default ``.nonstop/agent.sock``) or ``127.0.0.1:PORT`` (token required)."""


class DashboardConfig(Model):
    """The web dashboard the agent serves (docs/dashboard.md); off unless ``listen`` is set."""

    listen: str | None = None
    """``127.0.0.1:PORT`` (port 0: any free port, ``nonstop dashboard`` prints it). Any other
    address needs ``tls_cert`` and ``tls_key``: a session cookie never crosses a network in
    clear text."""
    tls_cert: str | None = None
    tls_key: str | None = None
    session_ttl: Duration = Field(default=12 * 3600.0, gt=0)
    """A session ends this long after its last request (and when the agent restarts)."""
    login_ttl: Duration = Field(default=120.0, gt=0, le=3600)
    """How long a login link from ``nonstop dashboard`` stays valid (it works once)."""

    @model_validator(mode="after")
    def _listen(self) -> DashboardConfig:
        from nonstop.config.validate import dashboard_listen_problem

        problem = dashboard_listen_problem(self.listen, self.tls_cert, self.tls_key)
        if problem is not None:
            raise ValueError(problem)
        return self


class RetentionConfig(Model):
    """What ``.nonstop/`` keeps; applied after each rollout and by ``nonstop prune``."""

    releases: int = Field(default=5, ge=1, le=1000)
    """Newest release copies kept (active, previous and any in use are kept on top)."""
    log_max_size: ByteSize = 10 * 1024 * 1024
    log_keep: int = Field(default=3, ge=0, le=100)
    """Rotated files kept per log (``NAME.log.1`` ...)."""
    log_max_age: Duration = 14 * 86400.0
    """Logs of instances that no longer run are deleted when older than this."""


class ReadinessConfig(Model):
    """When an instance of a process role is ready (docs/workers.md)."""

    kind: Literal["http", "tcp", "exec", "none"]
    path: str | None = None
    """``http``: the path to GET (default ``health.path``)."""
    command: str | None = None
    """``exec``: a shell command run in the instance's directory; exit 0 is a pass."""
    min_uptime: Duration = 1.0
    """``none``: ready once the process has stayed up this long."""

    @model_validator(mode="after")
    def _fits_kind(self) -> ReadinessConfig:
        if self.kind == "exec" and not self.command:
            raise ValueError('command: kind "exec" needs a "command" to run')
        if self.command and self.kind != "exec":
            raise ValueError(f'command: only kind "exec" runs a command, not "{self.kind}"')
        if self.path is not None and self.kind != "http":
            raise ValueError(f'path: only kind "http" probes a path, not "{self.kind}"')
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f'path: expected a path starting with "/", got "{self.path}"')
        return self


DEFAULT_QUIET_GRACE = 5.0
"""Seconds a quieted worker keeps running before its stop signal: jobs it had already taken
(a prefetch, a job between dequeue and start) start and finish while it takes no new ones."""


class ProcessConfig(Model):
    """A process role besides ``[app]`` (the routed ``web`` role): workers, schedulers."""

    command: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0, le=256)
    env: dict[str, str] = Field(default_factory=dict)
    """On top of ``[app] env`` and the deploy's own."""
    readiness: ReadinessConfig | None = None
    """Default: ``tcp`` when the command takes a ``{port}``, else ``none``."""
    queue: Literal["celery", "rq", "dramatiq", "arq", "huey"] | None = None
    """A preset for the queue library the role runs: its stop and quiet rules."""
    stop_signal: Literal[SIGNALS] | None = None  # type: ignore[valid-type]
    """Default: the queue preset's, else SIGTERM."""
    stop_timeout: Duration = 30.0
    """Time the role's processes get to finish their jobs before every one is killed."""
    kill_mode: Literal["main", "group"] | None = None
    """Default: the queue preset's, else "main"."""
    quiet_signal: Literal[QUIET_SIGNALS] | None = None  # type: ignore[valid-type]
    """Sent when the next release's instances of this role are ready: take no new jobs."""
    quiet_command: str | None = None
    """Run instead of a quiet signal (``$NONSTOP_PID`` is the instance's main process)."""
    quiet_grace: Duration | None = Field(default=None, ge=0)
    """From the quiet step's delivery to the stop signal. Default: 5 s with a quiet step, 0
    without one (:data:`DEFAULT_QUIET_GRACE`)."""

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: object) -> object:
        return AppConfig._env(value)

    @property
    def grace(self) -> float:
        """``quiet_grace`` resolved: seconds between the quiet step and the stop signal."""
        if self.quiet_grace is not None:
            return float(self.quiet_grace)
        return DEFAULT_QUIET_GRACE if (self.quiet_signal or self.quiet_command) else 0.0

    @model_validator(mode="after")
    def _one_quiet(self) -> ProcessConfig:
        one_quiet_step(self.quiet_signal, self.quiet_command)
        return self

    @property
    def has_port(self) -> bool:
        return "{port}" in self.command

    @property
    def probe(self) -> ReadinessConfig:
        if self.readiness is not None:
            return self.readiness
        return ReadinessConfig(kind="tcp" if self.has_port else "none")


ROLE_NAME = r"^[a-z][a-z0-9_]{0,30}$"


def _check_roles(processes: dict[str, ProcessConfig]) -> None:
    import re

    for name, role in processes.items():
        if not re.fullmatch(ROLE_NAME, name):
            raise ValueError(
                f"{name}: a role name is lower-case letters, digits and _ (at most 31), "
                "starting with a letter"
            )
        if name == "web":
            raise ValueError("web: the web role is [app]; name this role otherwise")
        kind = role.probe.kind
        if kind in ("http", "tcp") and not role.has_port:
            raise ValueError(
                f'{name}.readiness.kind: "{kind}" probes a port, but the command has no '
                '"{port}"; use "exec" or "none"'
            )


class NonstopConfig(Model):
    app: AppConfig
    health: HealthConfig = Field(default_factory=HealthConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    migrations: MigrationsConfig | None = None
    flags: FlagsConfig = Field(default_factory=FlagsConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    notify: list[NotifyConfig] = Field(default_factory=list)
    fleet: FleetConfig | None = None
    processes: dict[str, ProcessConfig] = Field(default_factory=dict)
    """More process roles of every release, by name (``[processes.worker]``)."""

    @field_validator("processes")
    @classmethod
    def _roles(cls, value: dict[str, ProcessConfig]) -> dict[str, ProcessConfig]:
        _check_roles(value)
        return value

    @model_validator(mode="after")
    def _external_front(self) -> NonstopConfig:
        external = self.fleet is not None and self.fleet.front.kind == "external"
        if external and self.router.kind != "haproxy":
            raise ValueError(
                'fleet.front.kind: "external" needs router.kind = "haproxy" on the hosts (their '
                f'router answers the load balancer\'s health path itself), got "{self.router.kind}"'
            )
        pinned = self.fleet is not None and self.fleet.front.switch == "edge"
        if pinned and self.router.kind != "haproxy":
            raise ValueError(
                'fleet.front.switch: "edge" needs router.kind = "haproxy" on the hosts (their '
                "router sends each request to the release the edge pins), got "
                f'"{self.router.kind}": set kind = "haproxy", or switch = "hosts"'
            )
        return self
