"""A threaded HTTP server on 127.0.0.1 (an ephemeral port) that a test starts and stops itself."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


class LoopbackServer:
    """Base of the test servers: ``_serve(handler_class)`` from ``__enter__``; ``__exit__`` stops it."""

    _httpd: Optional[ThreadingHTTPServer] = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started (use it as a context manager)"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a trickling handler must not hold up the test's exit
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
