"""Redaction of secrets in text that came from a server before it is stored (records, cache) or logged.

A server may echo the request, headers included, in an error body or even in an answer. :class:`Redactor` replaces
the secret values it was given (raw, URL-encoded, JSON-escaped) and anything that looks like a credential: the
value of an ``Authorization``/``X-Api-Key``/``Cookie``-style header, a ``Bearer``/``Basic`` token, the user:password
part of a URL.
"""
from __future__ import annotations

import json
import re
from urllib.parse import quote

MASK = "[REDACTED]"
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api[-_]key|x-auth-token|set-cookie|cookie)"
                     r"(\"?'?\s*[:=]\s*\"?'?)([^\"'\r\n,;}]*)")
# A scheme word, then a token-like string with a digit in it (so prose such as "basic colours" is left alone).
_SCHEME_TOKEN = re.compile(r"\b([Bb]earer|[Bb]asic)(\s+)(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}")
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")


class Redactor:
    def __init__(self, secrets: list[str] | tuple[str, ...] = ()):
        forms = set()
        for secret in secrets:
            if secret and len(secret) >= 4:  # shorter "secrets" would blank ordinary words
                forms |= {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
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
