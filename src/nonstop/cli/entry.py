"""The ``nonstop`` program: nonstop.cli.main's ``main``, after one look at the command line.

``nonstop migrate lint PROJECT`` of an Alembic or Django project whose rendered SQL is not
cached starts the framework's renderer here, before click and the CLI are imported, so the
project's Python renders while nonstop loads (nonstop.migrate.frameworks.early). Every other
command goes straight on.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["migrate", "lint"]:
        from nonstop.migrate.frameworks.early import start

        start(sys.argv[3:])
    from nonstop.cli.main import main as run

    run()
