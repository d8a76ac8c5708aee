"""Entry point of the ``nonstop`` command.

The click group and its command table are in nonstop.cli.app; this module imports neither
click nor the group unless a command needs them: a plain ``nonstop migrate lint --format json
FILE.sql`` is run by nonstop.cli.lint_fast without them (~35-45 ms less start-up, decision
0520). ``cli`` and ``COMMANDS`` are still importable from here.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a NonstopError becomes one clear line and its exit code, not a traceback.

    As the ``nonstop`` program (``argv`` None) the process ends right after: what is alive then
    is frozen out of the cyclic collector, whose shutdown passes would otherwise walk every
    class loaded (pglast alone defines over a thousand) only to free memory the exit frees:
    ~10 ms of a 0.12 s ``nonstop migrate lint`` of one statement. Objects still die by
    reference counting at shutdown, so files and sockets are closed as before."""
    try:
        _run(argv)
    finally:
        if argv is None:
            gc.freeze()


def _run(argv: list[str] | None) -> None:
    from nonstop.cli import lint_fast
    from nonstop.errors import NonstopError

    plain = lint_fast.parse(sys.argv[1:] if argv is None else argv)
    if plain is None:
        from nonstop.cli.app import run

        run(argv)
        return
    try:
        code = lint_fast.run(plain)
    except NonstopError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a defect: as nonstop.cli.app.run reports one
        if os.environ.get("NONSTOP_DEBUG"):
            import traceback

            traceback.print_exc()
        from nonstop.engine.health import describe

        sys.stderr.write(
            f"error: nonstop failed unexpectedly: {describe(exc)} (NONSTOP_DEBUG=1 shows where)\n"
        )
        sys.exit(1)
    sys.exit(code)


def __getattr__(name: str) -> Any:
    """``cli`` and ``COMMANDS``: the click group and its table, from nonstop.cli.app."""
    if name in ("cli", "COMMANDS"):
        from nonstop.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
