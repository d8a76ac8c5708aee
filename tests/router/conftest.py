"""Real routers of every kind, real upstream servers on free ports, a state directory under
/tmp: the fixtures are in router/fixtures.py (the router_haproxy tests use them too)."""

from router.fixtures import (  # noqa: F401  (fixtures)
    backends,
    client,
    kind,
    make_router,
    router,
    state_dir,
)
