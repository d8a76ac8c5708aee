"""The shop's web process: Django under gunicorn, as Django is deployed: a master process and
worker processes with a few threads each, every thread keeping its one database connection
(CONN_MAX_AGE = None), DEBUG off (shopweb/settings.py).

    python app.py --port 8001

Why processes and not one process with many threads: a Django request here costs 2-3 ms of
CPU, most of it Python under the GIL. One process serves 100 req/s on 0.25 of a core, but on a
shared 2-core machine at load 8-12 one process gets about that much (the scheduler shares CPU
per task): its queue grew to a 2 s p99, and the load generator could not send on time. Four
worker processes of two threads serve the same 100 req/s at a p50 of 7 ms and a p99 of 0.34 s
at load 7 (docs/benchmarks/frameworks.md). 4 instances at most in a deploy x 4 workers x 2
threads = 32 connections, under the test PostgreSQL's max_connections of 50.

SIGTERM: gunicorn stops accepting, lets requests in flight finish (graceful_timeout 2 s, under
the app's stop_timeout of 3 s), then exits 0.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopweb.settings")

from gunicorn.app.base import BaseApplication


class Shop(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    Shop(
        {
            "bind": f"127.0.0.1:{args.port}",
            "worker_class": "gthread",
            "workers": 4,
            "threads": 2,
            "preload_app": True,  # Django imported once, before the fork (no connection yet)
            "backlog": 256,
            "keepalive": 5,  # the router keeps its connections: no TCP set-up per request
            "graceful_timeout": 2,
            "accesslog": None,
            "errorlog": "-",  # a failed request's traceback goes to the instance's log
            "loglevel": "warning",
        }
    ).run()


if __name__ == "__main__":
    main()
