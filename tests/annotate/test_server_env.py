"""The server's environment (no telemetry, loopback-only SSRF exception, no leaking variables) and start-up progress."""
from __future__ import annotations

import ipaddress
import sqlite3

from annotate import server, telemetry
from annotate.settings import AnnotateParams


def test_telemetry_is_blanked_and_shell_values_do_not_leak(monkeypatch, tmp_path):
    for name, value in {"SENTRY_DSN": "https://k@o1.ingest.sentry.io/1", "HEARTEX_COLLECT_ANALYTICS": "true",
                        "LABEL_STUDIO_LATEST_VERSION_CHECK": "true", "FRONTEND_SENTRY_DSN": "x", "PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    params = AnnotateParams(data_root=str(tmp_path))
    env = server.server_env(params, server.Credentials("u", "p", "t"))
    for name, value in telemetry.TELEMETRY_ENV.items():
        assert env[f"LABEL_STUDIO_{name}"] == value
    assert not {"SENTRY_DSN", "FRONTEND_SENTRY_DSN", "HEARTEX_COLLECT_ANALYTICS", "PORT"} & set(env)
    assert env["LABEL_STUDIO_SENTRY_DSN"] == "" and env["LABEL_STUDIO_FRONTEND_SENTRY_DSN"] == ""


def test_ssrf_exception_is_loopback_only():
    params = AnnotateParams()
    env = server.server_env(params, server.Credentials("u", "p", "t"))
    banned = [ipaddress.ip_network(n) for n in env["LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]
    assert env["LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS"] == "false"
    assert not any(ipaddress.ip_address("127.0.0.1") in n for n in banned)
    assert not any(ipaddress.ip_address("::1") in n for n in banned)
    for address in ("10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.169.254", "fd00::1", "0.0.0.0"):
        assert any(ipaddress.ip_address(address) in n for n in banned), address


def test_start_phase_counts_applied_migrations(tmp_path):
    params = AnnotateParams(data_root=str(tmp_path))
    assert server._start_phase(params) == "starting"
    database = params.state_dir / "server" / "label_studio.sqlite3"
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT)")
        db.executemany("INSERT INTO django_migrations (app, name) VALUES (?, ?)", [("a", str(i)) for i in range(7)])
    assert server._start_phase(params) == "database migrations: 7 applied"


def test_the_servers_outbound_attempts_are_refused_and_logged(tmp_path):
    """The sitecustomize every server process loads: a lookup or connection off loopback fails and is logged."""
    import json
    import os
    import subprocess
    import sys

    from annotate.server import EGRESS_GUARD

    params = AnnotateParams(data_root=str(tmp_path))
    params.state_dir.mkdir(parents=True)
    env = server.server_env(params, server.Credentials("u", "p", "t"))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(EGRESS_GUARD)
    code = ("import socket\n"
            "for target in (lambda: socket.getaddrinfo('example.com', 443), "
            "lambda: socket.socket().connect(('192.0.2.1', 80))):\n"
            "    try:\n        target()\n    except OSError as error:\n        print('refused:', error)\n"
            "listener = socket.socket(); listener.bind(('127.0.0.1', 0)); listener.listen(1)\n"
            "socket.create_connection(listener.getsockname(), timeout=1).close(); print('loopback ok')\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.count("refused: [Errno") == 2 and "nothing leaves the machine" in done.stdout, done.stderr
    assert "loopback ok" in done.stdout
    logged = [json.loads(line) for line in server.egress_log(params).read_text().splitlines()]
    assert [(a["kind"], a["target"]) for a in logged] == [("lookup", "'example.com'"),
                                                          ("connect", "('192.0.2.1', 80)")]
    assert server.egress_attempts(params) == logged
