"""The shop's web process: Django behind a small WSGI server with a fixed pool of worker
threads, so each thread keeps its one database connection (CONN_MAX_AGE = None).

    python app.py --port 8001

SIGTERM: the listening socket closes, requests in flight finish, then the process exits 0.
"""

import argparse
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopweb.settings")

from django.core.wsgi import get_wsgi_application


class PooledServer(WSGIServer):
    request_queue_size = 256  # socketserver's default, 5, refuses bursts at 200 req/s
    pool = ThreadPoolExecutor(max_workers=6)  # 4 instances at most in a deploy: 24 connections

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = PooledServer(("127.0.0.1", args.port), QuietHandler)
    server.set_app(get_wsgi_application())

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    server.pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
