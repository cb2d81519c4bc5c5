"""A local Label Studio server: its own virtualenv, 127.0.0.1 only, secrets via env vars, stopped by PID.

Label Studio pins ``label-studio-sdk`` and Django versions that conflict with ours, so it is installed on first use
into ``.venv-labelstudio/`` (about a minute from a warm pip cache, ~1 GB). Its database, our credentials file, logs
and task maps live under ``<data_root>/labelstudio/``; it may serve local files from ``<data_root>`` only.

Secrets: the login and API token come from ``EDITKIT_LS_USERNAME`` / ``EDITKIT_LS_PASSWORD`` / ``EDITKIT_LS_TOKEN``,
or are generated once and kept in ``credentials.json`` (mode 0600). They reach the server through its environment,
never its argv, and are never printed or logged (the password is printed only when you ask: ``serve --show-password``).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from annotate import pidfile
from annotate.settings import AnnotateParams

HOST = "127.0.0.1"
EGRESS_GUARD = Path(__file__).resolve().parent / "egress"  # holds the sitecustomize.py the server's Python loads
# No outbound traffic: Label Studio's telemetry switched off, passed as LABEL_STUDIO_<NAME> (annotate/telemetry.py
# checks the values Django computes from them).
TELEMETRY_ENV = {
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "FEATURE_FLAGS_OFFLINE": "true",
    "GOOGLE_LOGGING_ENABLED": "false",
}
# Unprefixed variables Label Studio's settings read from the environment (they would leak in from the shell).
_LEAKING_ENV = ("USERNAME", "PASSWORD", "PORT", "HOST", "DEBUG", "SECRET_KEY", "DJANGO_DB", "DATABASE_URL")
# Label Studio 1.23.2's default SSRF-banned ranges (IANA special-purpose blocks) without loopback (127.0.0.0/8, ::1).
BANNED_SUBNETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::ffff:0:0/96", "::ffff:0:0:0/96",
    "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28", "2001:db8::/32", "2002::/16",
    "fc00::/7", "fe80::/10", "ff00::/8",
)
# Label Studio's settings read NAME, LABEL_STUDIO_NAME and HEARTEX_NAME: inherited ones of these prefixes are dropped.
_LEAKING_PREFIXES = ("LABEL_STUDIO_", "HEARTEX_", "SENTRY_", "FRONTEND_SENTRY_")



@dataclass
class Credentials:
    username: str
    password: str
    token: str


def credentials(params: AnnotateParams) -> Credentials:
    """From EDITKIT_LS_* env vars, else from (or newly into) the 0600 credentials file."""
    path = params.state_dir / "credentials.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    creds = Credentials(
        username=os.environ.get("EDITKIT_LS_USERNAME") or stored.get("username") or "reviewer@editkit.local",
        password=os.environ.get("EDITKIT_LS_PASSWORD") or stored.get("password") or secrets.token_urlsafe(12),
        token=os.environ.get("EDITKIT_LS_TOKEN") or stored.get("token") or secrets.token_hex(20),
    )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(creds.__dict__, handle)
    return creds


def base_url(params: AnnotateParams) -> str:
    """Our running server's address (the port it was started on, e.g. by ``serve --port``), else the configured one."""
    return f"http://{HOST}:{running_port(params) or params.port}"


def _progress(message: str) -> None:
    """One status line on stderr, rewritten in place on a terminal (first install and start take minutes)."""
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"{message:<78}", end=end, file=sys.stderr, flush=True)


def ensure_installed(params: AnnotateParams) -> Path:
    """Path of the `label-studio` executable, creating the virtualenv on first use.

    One process installs at a time (a lock file beside the venv): two pips writing one venv leave packages without
    their RECORD, which fails every later install. A venv left without the executable (an install that failed or
    was killed) is removed and built again."""
    import fcntl
    import shutil

    venv = Path(params.venv).resolve()
    exe = venv / "bin" / "label-studio"
    if exe.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if exe.exists():  # another process installed it while this one waited
            return exe
        if venv.exists():
            print(f"removing the incomplete {venv} (no label-studio executable: an earlier install did not finish)",
                  flush=True)
            shutil.rmtree(venv)
        try:
            _install(params, venv)
        except RuntimeError as error:  # once more from an empty directory: a pip failure leaves a half-built venv
            print(f"{str(error).splitlines()[-1]}\nretrying once in a new virtualenv", file=sys.stderr, flush=True)
            shutil.rmtree(venv, ignore_errors=True)
            _install(params, venv)
    return exe


def _install(params: AnnotateParams, venv: Path) -> None:
    print(f"installing label-studio=={params.label_studio_version} into {venv} (first use only, ~1-2 min)", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-compile: Python writes the bytecode on first import; pip's own compile step has been seen to fail its
    # check that each .pyc exists, failing a whole install over a cache file
    pip = subprocess.Popen([str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", "--no-compile",
                            f"label-studio=={params.label_studio_version}"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    collected, tail = 0, []
    for line in pip.stdout:
        tail = (tail + [line])[-20:]
        if line.startswith("Collecting"):
            collected += 1
            _progress(f"  pip: {collected} packages resolved ({time.perf_counter() - started:.0f} s)")
        elif line.startswith("Installing collected packages"):
            _progress(f"  pip: installing {collected} packages ({time.perf_counter() - started:.0f} s)")
    if pip.wait() != 0:
        raise RuntimeError("installing Label Studio failed:\n" + "".join(tail))
    print(f"\ninstalled in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def server_env(params: AnnotateParams, creds: Credentials) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKING_ENV and not k.startswith(_LEAKING_PREFIXES)}
    env.update({f"LABEL_STUDIO_{k}": v for k, v in TELEMETRY_ENV.items()})
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(params.state_dir.resolve() / "server"),
        "LABEL_STUDIO_USERNAME": creds.username,
        "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # must be set at the FIRST start, else the token gets 401
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(Path(params.data_root).resolve()),
        # Our SAM2 ML backend listens on 127.0.0.1, which Label Studio's SSRF guard refuses by default (the ML
        # backend and its webhook). Allow loopback only: every other reserved range stays banned.
        "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS": "false",
        "LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_SUBNETS),
        # Its processes load annotate/egress/sitecustomize.py: outbound connections and lookups refused and logged
        "PYTHONPATH": os.pathsep.join(p for p in (str(EGRESS_GUARD), os.environ.get("PYTHONPATH", "")) if p),
        "EDITKIT_EGRESS_LOG": str(egress_log(params).resolve()),
        "EDITKIT_LS_TIPS_OFF": "1",  # the tips panel's /heidi-tips/ answers "no tips" without fetching them
    })
    return env


def egress_log(params: AnnotateParams) -> Path:
    """Where the server's refused outbound attempts are logged (one JSON line each; absent when there were none)."""
    return params.state_dir / "egress.log"


def egress_attempts(params: AnnotateParams) -> list[dict]:
    path = egress_log(params)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _pid_path(params: AnnotateParams) -> Path:
    return params.state_dir / "server.pid"


def running_pid(params: AnnotateParams) -> int | None:
    return pidfile.running_pid(_pid_path(params))


def running_port(params: AnnotateParams) -> int | None:
    """The port our running server was started on (recorded beside its PID)."""
    if running_pid(params) is None:
        return None
    fields = _pid_path(params).read_text().split()
    return int(fields[1]) if len(fields) > 1 else None


def start(params: AnnotateParams) -> int:
    """Start the server (or reuse ours if it is running) and wait until it answers API calls. Returns its PID."""
    creds = credentials(params)
    pid = running_pid(params)
    if pid is not None:
        wait_healthy(params, creds, pid)
        return pid
    exe = ensure_installed(params)
    params.state_dir.mkdir(parents=True, exist_ok=True)
    pid = pidfile.spawn([str(exe), "start", "--internal-host", HOST, "--port", str(params.port), "--no-browser"],
                        server_env(params, creds), params.state_dir / "server.log", _pid_path(params), params.port)
    try:
        wait_healthy(params, creds, pid, show_progress=True)
    except BaseException:
        stop(params)
        raise
    return pid


def _start_phase(params: AnnotateParams) -> str:
    """What the starting server is doing: migrations run silently, so count them in its database (read-only)."""
    import sqlite3

    database = params.state_dir / "server" / "label_studio.sqlite3"
    if not database.exists():
        return "starting"
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.5) as db:
            applied = db.execute("SELECT COUNT(*) FROM django_migrations").fetchone()[0]
    except sqlite3.Error:
        return "creating the database"
    return f"database migrations: {applied} applied"


def wait_healthy(params: AnnotateParams, creds: Credentials, pid: int, show_progress: bool = False) -> None:
    import httpx

    started = time.monotonic()
    shown, shown_at = "", started
    deadline = started + params.start_timeout_s
    url = base_url(params)
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise RuntimeError(f"Label Studio exited during start-up; see {params.state_dir / 'server.log'}") from None
        try:
            health = httpx.get(f"{url}/health", timeout=5)
            if health.status_code == 200:
                api = httpx.get(f"{url}/api/projects", headers={"Authorization": f"Token {creds.token}"}, timeout=10)
                if api.status_code == 200:
                    if show_progress:
                        print(f"\nLabel Studio answered after {time.monotonic() - started:.0f} s", file=sys.stderr)
                    return
                last_error = f"/api/projects answered {api.status_code}"
                if api.status_code == 401:  # the token is fixed at the first start; a different one never works
                    raise RuntimeError("Label Studio rejected the API token: the server's data dir was created with "
                                       f"other credentials ({params.state_dir / 'credentials.json'} / EDITKIT_LS_TOKEN)")
            else:
                last_error = f"/health answered {health.status_code}"
        except httpx.TransportError as error:
            last_error = type(error).__name__
        phase = _start_phase(params)
        quiet_for = time.monotonic() - shown_at  # off a terminal, one line per phase change at most every 10 s
        if show_progress and (sys.stderr.isatty() or (phase != shown and quiet_for > 10) or quiet_for > 30):
            _progress(f"  Label Studio: {phase} ({time.monotonic() - started:.0f} s)")
            shown, shown_at = phase, time.monotonic()
        time.sleep(1.0)
    raise TimeoutError(f"Label Studio not healthy after {params.start_timeout_s:.0f} s ({last_error}); "
                       f"see {params.state_dir / 'server.log'}")


def stop(params: AnnotateParams, timeout_s: float = 30.0) -> bool:
    """Stop the server we started (its process group, by the recorded PID). False if none was running."""
    return pidfile.stop_group(_pid_path(params), timeout_s)


_ADD_USER = """
import json, os, sys, label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
os.environ['DJANGO_SETTINGS_MODULE'] = 'core.settings.label_studio'
import django
django.setup()
from organizations.models import Organization
from users.models import User
email, password = os.environ['EDITKIT_NEW_USER'], os.environ['EDITKIT_NEW_PASSWORD']
user = User.objects.filter(email=email).first() or User.objects.create_user(email=email, password=password)
user.set_password(password)
org = Organization.objects.first()
org.add_user(user)
user.active_organization = org
user.save()
print('EDITKIT_USER=' + json.dumps({'id': user.id, 'email': user.email}))
"""


def add_user(params: AnnotateParams, email: str, password: str) -> int:
    """Create (or reset the password of) a reviewer's Label Studio login in our organisation; returns the user id.

    Runs in the server's own virtualenv against its database (the password goes through the environment, never argv).
    """
    python = Path(params.venv).resolve() / "bin" / "python"
    env = {**server_env(params, credentials(params)), "EDITKIT_NEW_USER": email, "EDITKIT_NEW_PASSWORD": password}
    done = subprocess.run([str(python), "-c", _ADD_USER], env=env, capture_output=True, text=True, timeout=300)
    line = next((l for l in done.stdout.splitlines() if l.startswith("EDITKIT_USER=")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"could not add the Label Studio user {email}: {tail[0]}")
    return int(json.loads(line.split("=", 1)[1])["id"])


def client(params: AnnotateParams):
    """An SDK client for the running server, authenticated with the (never printed) API token."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=base_url(params), api_key=credentials(params).token)
