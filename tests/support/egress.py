"""A local recorder for outbound attempts of a browser under test.

Chromium started with :func:`resolver_rules` resolves every host name except loopback to this recorder, so a page
that reaches for any public host (a tips feed, a CDN, telemetry) connects here instead of leaving the machine. The
recorder notes the host asked for (the ``Host`` header of plain HTTP, the SNI name of a TLS ClientHello) and closes
the connection::

    with EgressRecorder() as recorder:
        web = driver(resolver_rules=recorder.resolver_rules())
        ...
    assert recorder.attempts == []
"""
from __future__ import annotations

import socket
import threading


def _sni(data: bytes) -> str | None:
    """The server name of a TLS ClientHello (None when there is none or the bytes are not one)."""
    try:
        if len(data) < 43 or data[0] != 0x16 or data[5] != 0x01:
            return None
        pos = 43  # record header 5 + handshake header 4 + version 2 + random 32
        pos += 1 + data[pos]  # session id
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")  # cipher suites
        pos += 1 + data[pos]  # compression methods
        end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            kind, size = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
            if kind == 0:  # server_name: list length 2, type 1, name length 2, name
                return data[pos + 9:pos + 9 + int.from_bytes(data[pos + 7:pos + 9], "big")].decode("ascii", "replace")
            pos += 4 + size
    except IndexError:
        return None
    return None


def _host(data: bytes) -> str:
    name = _sni(data)
    if name:
        return f"tls:{name}"
    for line in data.split(b"\r\n")[1:]:
        if line.lower().startswith(b"host:"):
            return "http:" + line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return f"unknown:{data[:24]!r}"


class EgressRecorder:
    """A TCP listener on 127.0.0.1 that records the host of every connection it gets."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def resolver_rules(self) -> str:
        """Chromium's --host-resolver-rules: every name to this recorder, loopback names as they are."""
        return f"MAP * 127.0.0.1:{self.port}, EXCLUDE localhost, EXCLUDE 127.0.0.1"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not self._stop:
                    self.attempts.append(_host(data))

    def __enter__(self) -> EgressRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._sock.close()
