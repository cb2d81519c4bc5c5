"""Redaction of secrets in text that came from a server before it is stored (records, cache) or logged.

A server may echo the request, headers included, in an error body or even in an answer. :class:`Redactor` replaces
the secret values it was given (raw, URL-encoded, JSON-escaped, base64) and anything that looks like a credential:
the value of an ``Authorization``/``X-Api-Key``/``Cookie``-style header, a ``Bearer``/``Basic`` token, the
user:password part of a URL. :meth:`Redactor.label` also keeps a server-given name (a model id) short, on one line.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import weakref
from urllib.parse import quote

MASK = "[REDACTED]"
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api[-_]key|x-auth-token|set-cookie|cookie)"
                     r"(\"?'?\s*[:=]\s*\"?'?)([^\"'\r\n,;}]*)")
# A scheme word, then a token-like string with a digit in it (so prose such as "basic colours" is left alone).
_SCHEME_TOKEN = re.compile(r"\b([Bb]earer|[Bb]asic)(\s+)(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}")
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
LABEL_CHARS = 200  # a server-given name (model id, finish reason) is kept to this many characters


class Redactor:
    def __init__(self, secrets: list[str] | tuple[str, ...] = ()):
        forms = set()
        for secret in secrets:
            if secret and len(secret) >= 4:  # shorter "secrets" would blank ordinary words
                forms |= {secret, quote(secret, safe=""), json.dumps(secret)[1:-1],
                          base64.b64encode(secret.encode()).decode().rstrip("="),
                          base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")}
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for form in self._forms:
            text = text.replace(form, MASK)
            for cut in range(len(form) - 1, 7, -1):  # a key cut short at the end of a (server-truncated) body
                if text.endswith(form[:cut]):
                    text = text[:-cut] + MASK
                    break
        text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        text = _SCHEME_TOKEN.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        return _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)

    def label(self, text: object, limit: int = LABEL_CHARS) -> str:
        """A short name a server gave (a model id, a finish reason) made safe to store, log and print: redacted
        first (so no cut leaves half a key), then on one line without control characters, at most ``limit``
        characters."""
        clean = _UNPRINTABLE.sub(" ", self(text if isinstance(text, str) else str(text)) or "")
        return clean if len(clean) <= limit else clean[: limit - 3] + "..."

    def names(self, items: object, limit: int = 10) -> list[str]:
        """A server's list of names (e.g. served model ids) as at most ``limit`` safe labels (see :meth:`label`)."""
        items = list(items) if isinstance(items, (list, tuple)) else []
        out = [self.label(item, 100) for item in items[:limit]]
        return out + [f"... {len(items) - limit} more"] if len(items) > limit else out

    def leaks(self, text: str | None) -> bool:
        """Whether ``text`` holds one of the secrets (in any of the forms this redactor masks)."""
        return bool(text) and any(form in text for form in self._forms)


# httpx/httpcore log every exchange at DEBUG, response headers included: a server echoing the key in a header would
# put it into a debug log. Every active client's redactor is applied to what those loggers emit.
HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.connection_pool", "httpcore.http11",
                "httpcore.http2", "httpcore.proxy", "httpcore.socks")


class _LogRedaction(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.redactors: "weakref.WeakSet[Redactor]" = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        redactors = list(self.redactors)
        if not redactors:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a broken log call is logging's problem, not ours
            return True
        clean = text
        for redact in redactors:
            clean = redact(clean) or clean
        if clean != text:
            record.msg, record.args = clean, None
        return True


_LOG_REDACTION = _LogRedaction()


def redact_http_logs(redactor: Redactor) -> None:
    """Apply ``redactor`` to the httpx/httpcore loggers' records for as long as it lives."""
    _LOG_REDACTION.redactors.add(redactor)
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_REDACTION not in logger.filters:
            logger.addFilter(_LOG_REDACTION)
