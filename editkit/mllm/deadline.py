"""Wall-clock deadlines for httpx requests, end to end: connect, send, headers and the whole body.

httpx timeouts bound each socket operation, so a server that sends one byte a second keeps a request open forever.
:func:`deadline_transport` wraps the connection pool's network backend so that every socket operation started on a
thread inside :func:`deadline` gets at most the time left until that deadline, and fails with a timeout once it
has passed: however a server trickles, the request ends by the deadline.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import httpcore
import httpx

_local = threading.local()


@contextmanager
def deadline(at: Optional[float]) -> Iterator[None]:
    """Within the block, this thread's requests end by ``at`` (``time.monotonic()``; None = no deadline)."""
    previous = getattr(_local, "at", None)
    _local.at = at
    try:
        yield
    finally:
        _local.at = previous


def _cap(timeout: Optional[float], error: type[Exception]) -> Optional[float]:
    at = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        return self._stream.read(max_bytes, _cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self._stream.write(buffer, _cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: Optional[str] = None,
                  timeout: Optional[float] = None) -> httpcore.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, _cap(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, guard: Optional[Callable[[str, int], list[str]]] = None):
        self._backend = backend
        self._guard = guard

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None, local_address: Optional[str] = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        if self._guard is None:
            return _Stream(self._backend.connect_tcp(host, port, _cap(timeout, httpcore.ConnectTimeout), local_address,
                                                     socket_options))
        # Connect to the addresses the guard vetted (not to the name, which could resolve elsewhere by now).
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in self._guard(host, port):
            try:
                return _Stream(self._backend.connect_tcp(address, port, _cap(timeout, httpcore.ConnectTimeout),
                                                         local_address, socket_options))
            except httpcore.ConnectError as failed:
                error = failed
        raise error

    def connect_unix_socket(self, path: str, timeout: Optional[float] = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_unix_socket(path, _cap(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(guard: Optional[Callable[[str, int], list[str]]] = None, **kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport(**kwargs)`` whose socket operations honour :func:`deadline`.

    ``guard(host, port)``: the addresses a new connection may use (it raises ``httpcore.ConnectError`` to refuse;
    :class:`editkit.mllm.endpoint.HostGuard`)."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = getattr(transport, "_pool", None)
    # httpx does not expose httpcore's `network_backend` option; set it on the pool it built (before any connection).
    if not isinstance(getattr(pool, "_network_backend", None), httpcore.NetworkBackend):
        raise RuntimeError(f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: cannot install the request "
                           "deadline (the connection pool layout changed); pin httpx<0.29 or update "
                           "editkit.mllm.deadline")
    pool._network_backend = _Backend(pool._network_backend, guard)
    return transport
