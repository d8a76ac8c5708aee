"""The ``nonstop`` program: nonstop.cli.main's ``main``, after one look at the command line.

``nonstop migrate lint PROJECT`` of an Alembic or Django project whose rendered SQL is not
cached starts the framework's renderer here, before click and the CLI are imported, so the
project's Python renders while nonstop loads (nonstop.migrate.frameworks.early). Every other
command, and the plain JSON lint of SQL files (nonstop.cli.lint_fast), goes straight on.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["migrate", "lint"]:
        from nonstop.cli import lint_fast

        # SQL files with JSON out are linted as SQL (lint_fast), which never takes a started
        # renderer: loading the framework code to look for a project costs ~30 ms of CPU
        if lint_fast.parse(sys.argv[1:]) is None:
            from nonstop.migrate.frameworks.early import start

            start(sys.argv[3:])
    from nonstop.cli.main import main as run

    run()
