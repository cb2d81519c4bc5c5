"""Start/stop the SAM2 ML backend process (127.0.0.1, by PID) and connect it to the review projects."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from annotate import pidfile
from annotate.settings import AnnotateParams
from editkit.errors import UserError

HOST = "127.0.0.1"


def _pid_path(params: AnnotateParams) -> Path:
    return params.state_dir / "ml_backend.pid"


def url(params: AnnotateParams) -> str:
    return f"http://{HOST}:{params.ml_backend_port}"


def running_pid(params: AnnotateParams) -> int | None:
    return pidfile.running_pid(_pid_path(params))


class BackendFailed(UserError, RuntimeError):
    """The SAM2 backend did not come up; the message is its own reason (e.g. no weights)."""


def last_error(params: AnnotateParams) -> str:
    """The backend's own reason from its log (the line it marks), else the log's last line."""
    from annotate.ml_backend.__main__ import ERROR_MARK

    log = params.state_dir / "ml_backend.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    starts = [i for i, line in enumerate(lines) if line.startswith("--- start ")]
    lines = lines[starts[-1] + 1:] if starts else lines  # this start's output only
    marked = [line.split(ERROR_MARK, 1)[1] for line in lines if ERROR_MARK in line]
    if marked:
        return marked[-1]
    return (lines[-1].strip() if lines else "no output") + f" (see {log})"


def start(params: AnnotateParams) -> str:
    """Start the backend (or reuse ours), wait for /health, return its URL."""
    import httpx

    if running_pid(params) is None:
        params.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "annotate.ml_backend", "--model", params.ml_backend_model,
                   "--port", str(params.ml_backend_port), "--data-root", str(Path(params.data_root).resolve()),
                   "--device", params.ml_backend_device]
        if params.ml_backend_local_files_only:
            command.append("--local-files-only")
        from annotate.ml_backend.__main__ import OFFLINE_ENV

        env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                                           os.environ.get("PYTHONPATH", "")])}
        log = params.state_dir / "ml_backend.log"
        with open(log, "ab") as out:  # last_error reads this start's output only
            out.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        pidfile.spawn(command, env, log, _pid_path(params))
    pid = running_pid(params)
    deadline = time.monotonic() + params.ml_backend_start_timeout_s
    while time.monotonic() < deadline:
        if pidfile.reap(pid) or running_pid(params) is None:  # exited: its own one-line reason, at once
            _pid_path(params).unlink(missing_ok=True)
            raise BackendFailed(f"the SAM2 ML backend exited: {last_error(params)}")
        try:
            if httpx.get(url(params) + "/health", timeout=5).status_code == 200:
                return url(params)
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    stop(params)
    raise TimeoutError(f"SAM2 ML backend (pid {pid}) not healthy after {params.ml_backend_start_timeout_s:.0f} s")


def stop(params: AnnotateParams, timeout_s: float = 20.0) -> bool:
    return pidfile.stop_group(_pid_path(params), timeout_s)


def connect(ls, params: AnnotateParams, project_id: int, backend_url: str) -> None:
    """Register the backend as the project's interactive model and add the SAM2 point/box tools to its config."""
    from annotate.labeling import SMART_POINT, label_config, overlay_of

    config = ls.projects.get(id=project_id).label_config or ""
    if SMART_POINT not in config:
        ls.projects.update(id=project_id, label_config=label_config(overlay_of(config), smart=True))
    if not any(b.url.rstrip("/") == backend_url.rstrip("/") for b in ls.ml.list(project=project_id)):
        ls.ml.create(project=project_id, url=backend_url, title="editkit SAM2", is_interactive=True)


def connect_all(ls, params: AnnotateParams, backend_url: str) -> int:
    projects = [int(p.id) for p in ls.projects.list()]
    for project_id in projects:
        connect(ls, params, project_id, backend_url)
    return len(projects)


def connect_if_running(ls, params: AnnotateParams, project_id: int | None) -> None:
    """After a push: a project created while the backend runs gets it too."""
    if project_id is not None and running_pid(params) is not None:
        connect(ls, params, project_id, url(params))


def disconnect_all(ls, params: AnnotateParams, backend_url: str) -> int:
    """Unwire a dead backend: remove it from every project and take the SAM2 tools out of their configs."""
    from annotate.labeling import SMART_POINT, label_config, overlay_of

    removed = 0
    for project in ls.projects.list():
        for backend in ls.ml.list(project=int(project.id)):
            if backend.url.rstrip("/") == backend_url.rstrip("/"):
                ls.ml.delete(id=backend.id)
                removed += 1
        config = ls.projects.get(id=int(project.id)).label_config or ""
        if SMART_POINT in config:
            ls.projects.update(id=int(project.id), label_config=label_config(overlay_of(config)))
    return removed
