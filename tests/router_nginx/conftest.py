"""A real nginx, real upstream servers on free ports, a state directory under /tmp: the
fixtures are in router/fixtures.py."""

from router.fixtures import (  # noqa: F401  (fixtures)
    backends,
    client,
    state_dir,
)
