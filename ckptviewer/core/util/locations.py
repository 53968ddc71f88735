"""Where a checkpoint is: a local path or a URL, and how to show either without leaking a secret.

Every place that shows a location (error messages, the window's titles and recent files, logs, the
command line's output) goes through :func:`shown_location` or :func:`location_name`; free text that may
quote a URL or a token (an exception message from a network library) goes through :func:`redact`.
What is removed: a URL's ``user:password@`` part, the values of query parameters that carry a signature
or a token (presigned S3/GCS/Azure URLs), and strings shaped like access tokens (``hf_...``,
``AKIA...``, ``Bearer ...``). Nothing here touches the network.
"""
from __future__ import annotations

import os
import re
import urllib.parse

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# Query parameters whose values are secrets (or sign one): matched on the lower-cased name.
_SECRET_PARTS = ("sig", "token", "key", "secret", "password", "passwd", "auth", "credential", "policy", "jwt",
                 "session", "code")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_TOKENS = re.compile(
    r"\b(hf_[A-Za-z0-9]{8,}|api_org_[A-Za-z0-9]{8,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|ya29\.[A-Za-z0-9_\-.]{10,}|xox[bap]-[A-Za-z0-9\-]{10,})")
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{8,}")
MASK = "***"


def is_url(location: object) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (which name local files)."""
    if not isinstance(location, str):
        return False
    m = _SCHEME.match(location.strip())
    return bool(m) and len(m.group(1)) > 1 and m.group(1).lower() != "file"


def url_scheme(url: str) -> str:
    m = _SCHEME.match(url.strip())
    return m.group(1).lower() if m else ""


def normalize_location(location: str | os.PathLike) -> str:
    """A URL stripped of surrounding blanks, a ``file://`` URL as its local path, a path made absolute."""
    text = os.fspath(location)
    stripped = text.strip()
    if is_url(stripped):
        return stripped
    if stripped.lower().startswith("file://"):
        parts = urllib.parse.urlsplit(stripped)
        return os.path.abspath(urllib.parse.unquote(parts.path))
    return os.path.abspath(text)


def _secret_param(name: str) -> bool:
    low = name.lower()
    return low.startswith(("x-amz-", "x-goog-")) or any(part in low for part in _SECRET_PARTS)


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part and with secret query values masked (``***``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port            # raises ValueError for a malformed port
    except ValueError:
        return _URL_IN_TEXT.sub(MASK, url) if _URL_IN_TEXT.search(url) else MASK
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if pairs:
            query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}="
                             f"{MASK if _secret_param(k) else urllib.parse.quote(v, safe='-_.~/:')}" for k, v in pairs)
        else:
            query = MASK if _secret_param(query) else query
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(text: object) -> str:
    """Free text (an exception message, a log line) with every URL redacted and token-like strings masked."""
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))
    out = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {MASK}", out)
    return _TOKENS.sub(MASK, out)


def shown_location(location: str | os.PathLike | None) -> str:
    """How to show a location to a person: a path as it is, a URL redacted."""
    if location is None:
        return ""
    text = os.fspath(location)
    return redact_url(text) if is_url(text) else text


def location_name(location: str | os.PathLike | None) -> str:
    """A short name: a path's base name, a URL's last path segment (never its query or credentials)."""
    if location is None:
        return ""
    text = os.fspath(location)
    if not is_url(text):
        return os.path.basename(text)
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        return "URL"
    segments = [s for s in parts.path.split("/") if s]
    if segments:
        return urllib.parse.unquote(segments[-1])
    return host or redact_url(text)


def cache_key_url(url: str) -> str:
    """What a cache keys a URL by: scheme, host, port, path and the query parameters that are not secrets
    or expiry times, sorted (a presigned URL's signature changes every time it is made, the file does not).
    Never holds a credential, so it may be written to disk."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1].lower()
    pairs = sorted((k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                   if not _secret_param(k) and k.lower() not in ("expires", "se", "st"))
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path, urllib.parse.urlencode(pairs), ""))
