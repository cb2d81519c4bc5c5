"""Loaded at start-up by every Python process the review server runs (its directory is on their PYTHONPATH).

Nothing leaves the machine: a connection to a non-loopback address, and a name lookup of anything but a loopback
name, is refused with ``OSError`` and logged, one JSON line per attempt, to ``$EDITKIT_EGRESS_LOG``. Unix sockets and
loopback (the server itself, the local SAM2 backend) are untouched. Plain stdlib, no project imports: it runs in
Label Studio's own virtualenv.
"""
import errno
import ipaddress
import json
import os
import socket
import time
import traceback

_LOG = os.environ.get("EDITKIT_EGRESS_LOG")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost") or host == "":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(kind: str, target) -> OSError:
    if _LOG:
        frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack(limit=8)[:-2]]
        line = json.dumps({"time": time.time(), "pid": os.getpid(), "kind": kind, "target": repr(target),
                           "stack": frames})
        try:
            with open(_LOG, "a") as handle:
                handle.write(line + "\n")
        except OSError:
            pass
    return OSError(errno.ENETUNREACH, f"outbound {kind} to {target!r} refused: nothing leaves the machine")


_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        raise _refuse("lookup", host)
    return _getaddrinfo(host, *args, **kwargs)


def _target(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and not _loopback(address[0]):
        return address
    return None


def _guarded_connect(self, address):
    if _target(self, address) is not None:
        raise _refuse("connect", address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if _target(self, address) is not None:
        _refuse("connect", address)
        return errno.ENETUNREACH
    return _connect_ex(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


# Label Studio's tips panel ("Did you know?") asks the server's /heidi-tips/, which fetches a JSON file from a public
# code host on every page load; no setting turns it off. Its view is replaced, as its module loads, by one that
# answers "no tips" (the same answer it gives offline) without a network call.
class _TipsOff:
    _NAMES = ("core.views", "label_studio.core.views")

    def find_spec(self, name, path=None, target=None):
        if name not in self._NAMES:
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            def heidi_tips(request):
                from django.http import HttpResponse

                return HttpResponse("{}", content_type="application/json", status=404)

            module.heidi_tips = heidi_tips

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("EDITKIT_LS_TIPS_OFF") == "1":
    import sys as _sys

    _sys.meta_path.insert(0, _TipsOff())
