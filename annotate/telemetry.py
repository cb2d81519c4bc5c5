"""No outbound traffic from the review server: Label Studio's telemetry settings, blanked, and a check of them.

Its defaults carry Sentry DSNs for the server and the browser (``core/settings/label_studio.py``), an analytics
post to tele.labelstud.io, a PyPI version check and remote feature flags; ``COLLECT_ANALYTICS=false`` alone does not
cover Sentry. :data:`TELEMETRY_ENV` switches each off (as ``LABEL_STUDIO_<NAME>``, which its settings read first);
:func:`effective_settings` reads the values Django actually computes, in the server's own virtualenv.
(:data:`TELEMETRY_ENV` is defined in :mod:`annotate.server`, which builds the environment; this module checks it.)
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from annotate.server import TELEMETRY_ENV, credentials, server_env  # noqa: F401  (TELEMETRY_ENV: re-exported)
from annotate.settings import AnnotateParams

# The settings of TELEMETRY_ENV as Django sees them, with the values that mean "off".
TELEMETRY_OFF = {"SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": False,
                 "LATEST_VERSION_CHECK": False, "FEATURE_FLAGS_OFFLINE": True}


def effective_settings(params: AnnotateParams, names=tuple(TELEMETRY_OFF)) -> dict:
    """The named Django settings as the server computes them from :func:`server_env` (read in its own venv)."""
    python = Path(params.venv).resolve() / "bin" / "python"
    code = ("import json, os, sys, label_studio; sys.path.insert(0, os.path.dirname(label_studio.__file__)); "
            "os.environ['DJANGO_SETTINGS_MODULE'] = 'core.settings.label_studio'; "
            "from django.conf import settings; "
            f"print('EDITKIT_SETTINGS=' + json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))")
    done = subprocess.run([str(python), "-c", code], env=server_env(params, credentials(params)), capture_output=True,
                          text=True, timeout=120, check=True)
    line = next(l for l in done.stdout.splitlines() if l.startswith("EDITKIT_SETTINGS="))
    return json.loads(line.split("=", 1)[1])
