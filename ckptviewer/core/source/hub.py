"""``hf://`` locations on the Hugging Face Hub: resolved with ``huggingface_hub`` (its URI grammar, its API
client, its login), read by range over HTTP (``source.http``) from the Hub's ``resolve`` URL.

``hf://ORG/REPO/PATH``, ``hf://ORG/REPO@REVISION/PATH`` (a branch, tag, ``refs/pr/N`` or commit) and
``hf://datasets/ORG/REPO/...`` are parsed by ``huggingface_hub.utils.parse_hf_uri``, which also accepts the
Hub's web URLs (``https://huggingface.co/ORG/REPO/blob/main/model.safetensors``), so a link copied from the
browser opens the file rather than its HTML page. A revision is pinned to its commit before any byte is
read, so every range comes from the same version; the file's content hash (its LFS sha256 or git blob id)
keys the block cache. The token is ``huggingface_hub``'s: ``HF_TOKEN`` or the ``hf auth login`` /
``huggingface-cli login`` token file.

Hazards: ``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import, so the endpoint is read here at each
call and passed explicitly; its telemetry would call huggingface.co even for another endpoint, so it is
turned off; its tree listing has no timeout, so calls run under ``net.call_cancellable`` with one; its
exceptions keep the request (with the token) on their response, so none leaves this module.
"""
from __future__ import annotations

import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..util.errors import (
    MissingDependencyError,
    RemoteAccessError,
    RemoteError,
    RemoteNotFoundError,
    RemoteTimeoutError,
)
from . import net

LOGIN_HINT = ("If it is gated, accept its terms on the Hub; if it is private, log in: run `hf auth login` "
              "(or `huggingface-cli login`) or set HF_TOKEN.")
DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_MEMO_S = 60.0               # a resolved revision is reused this long (opening 30 shards resolves once)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _hf() -> Any:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise MissingDependencyError("reading hf:// locations needs huggingface_hub",
                                     hint='Install it with: pip install "huggingface_hub>=1"') from None
    constants.HF_HUB_DISABLE_TELEMETRY = True       # read at call time; the import may have come first
    return huggingface_hub


def looks_like_hub_url(url: str) -> bool:
    """A huggingface.co (or ``$HF_ENDPOINT``) web URL of a file, which the Hub serves as an HTML page."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return False
    hosts = {"huggingface.co", "www.huggingface.co", "hf.co", urllib.parse.urlsplit(endpoint()).hostname or ""}
    return host in hosts and ("/blob/" in url or "/resolve/" in url)


@dataclass
class HubFile:
    """What an ``hf://`` file resolved to."""

    repo_type: str
    repo_id: str
    revision: str            # as asked ("main", a tag, ...)
    commit: str              # the commit it pinned to
    path: str
    size: int
    validator: str           # a content hash
    resolve_url: str
    headers: dict[str, str]


@dataclass
class HubFolder:
    repo_type: str
    repo_id: str
    revision: str
    commit: str
    path: str
    files: list[tuple[str, int]]     # (path in repo, size) of the files directly in the folder

    def location(self, path_in_repo: str) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        rev = "" if self.revision in ("", "main") else "@" + urllib.parse.quote(self.revision, safe="")
        return f"hf://{prefix}{self.repo_id}{rev}/{path_in_repo}"


_memo: dict[tuple, tuple[float, str]] = {}
_memo_lock = threading.Lock()


def resolve(url: str) -> HubFile | HubFolder:
    """Resolve an ``hf://`` URL (or a Hub web URL) to a pinned file, or to a folder's listing."""
    hf = _hf()
    ep = endpoint()
    repo_type, repo_id, revision, path = parse(url, ep)
    if repo_type not in ("model", "dataset", "space"):
        raise RemoteNotFoundError(f"hf:// {repo_type} locations are not supported", hint="")
    token = hf.get_token()
    api = hf.HfApi(endpoint=ep, token=token if token else False)
    revision = revision or "main"
    what = f"{repo_type + ' ' if repo_type != 'model' else ''}{repo_id}"
    commit = _commit(api, repo_type, repo_id, revision, what)
    path = path.strip("/")
    if not path:
        return _folder(api, repo_type, repo_id, revision, commit, "", what)
    infos = _call(api.get_paths_info, repo_id, [path], revision=commit, repo_type=repo_type, what=what)
    if not infos:
        raise RemoteNotFoundError(f"{what} has no file {path!r} at revision {revision!r}",
                                  hint="Check the file name (and the revision after @).")
    info = infos[0]
    if not hasattr(info, "size") or getattr(info, "blob_id", None) is None:
        return _folder(api, repo_type, repo_id, revision, commit, path, what)
    lfs = getattr(info, "lfs", None)
    sha256 = (getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)) if lfs else None
    validator = f"sha256:{sha256}" if sha256 else f"blob:{info.blob_id}"
    resolve_url = hf.hf_hub_url(repo_id, path, repo_type=repo_type, revision=commit, endpoint=ep)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HubFile(repo_type, repo_id, revision, commit, path, int(info.size), validator, resolve_url, headers)


BAD_URI_HINT = "Write it as hf://ORG/REPO/FILE or hf://ORG/REPO@REVISION/FILE (hf://datasets/ORG/REPO/... for a dataset)."


def parse(url: str, ep: str) -> tuple[str, str, str | None, str]:
    """(repo type, repo id, revision or None, path in the repo) of an ``hf://`` URL or a Hub web URL, by
    ``huggingface_hub``'s own parser (older releases without one: the plain ``hf://`` grammar here)."""
    try:
        from huggingface_hub.errors import HfUriError
        from huggingface_hub.utils import parse_hf_uri
    except ImportError:
        return _parse_plain(url)
    try:
        uri = parse_hf_uri(url, endpoint=ep)
    except HfUriError as e:
        raise RemoteNotFoundError(f"not a Hub location ({net.safe_message(e)})", hint=BAD_URI_HINT) from None
    return uri.type, uri.id, uri.revision, uri.path_in_repo


def _parse_plain(url: str) -> tuple[str, str, str | None, str]:
    """``hf://[models/|datasets/|spaces/]ORG/NAME[@REVISION][/PATH]``; a revision may be ``refs/pr/N``."""
    if not url.startswith("hf://"):
        raise RemoteNotFoundError("this huggingface_hub cannot read Hub web links", hint=BAD_URI_HINT)
    body = url[len("hf://"):]
    repo_type = "model"
    for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space"), ("models/", "model")):
        if body.startswith(prefix):
            repo_type, body = kind, body[len(prefix):]
            break
    org, _, after = body.partition("/")
    name, _, rest = after.partition("/")
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
        if rest and revision == "refs" and rest.split("/", 1)[0] in ("pr", "convert"):
            bits = rest.split("/", 2)
            revision = "/".join(["refs"] + bits[:2])
            rest = bits[2] if len(bits) > 2 else ""
        revision = urllib.parse.unquote(revision)
    if not org or not name:
        raise RemoteNotFoundError("not a Hub location (it names no ORG/REPO)", hint=BAD_URI_HINT)
    return repo_type, f"{org}/{name}", revision, rest


def cache_key(url: str) -> str:
    """The cache's key for an ``hf://`` URL as given (the revision asked for, not the commit): what an
    offline reopen of the same URL looks up."""
    return f"hf@{endpoint()}/{url.removeprefix('hf://')}"


def error_codes(what: str) -> dict[str, tuple[type, str, str]]:
    """The Hub's ``X-Error-Code`` answers for a file's bytes, as our errors."""
    return {
        "GatedRepo": (RemoteAccessError, f"{what} is a gated repository and this account has no access",
                      "Accept its terms on its Hub page, then log in: run `hf auth login` (or "
                      "`huggingface-cli login`) or set HF_TOKEN."),
        "RepoNotFound": (RemoteAccessError, f"repository {what} was not found, or it is private", LOGIN_HINT),
        "EntryNotFound": (RemoteNotFoundError, f"{what} has no such file", "Check the file name."),
        "RevisionNotFound": (RemoteNotFoundError, f"{what} has no such revision", "Check the revision after @."),
    }


# -- calls ------------------------------------------------------------------------------------------
def _commit(api, repo_type: str, repo_id: str, revision: str, what: str) -> str:
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    key = (api.endpoint, repo_type, repo_id, revision, bool(api.token))
    now = time.monotonic()
    with _memo_lock:
        hit = _memo.get(key)
        if hit and now - hit[0] < _REPO_MEMO_S:
            return hit[1]
    info = _call(api.repo_info, repo_id, revision=revision, repo_type=repo_type, timeout=net.timeout_s(),
                 what=what, revision_name=revision)
    sha = getattr(info, "sha", None)
    if not isinstance(sha, str) or not sha:
        raise RemoteError(f"the Hub did not say which commit {what}@{revision} is")
    with _memo_lock:
        _memo[key] = (now, sha)
    return sha


def _folder(api, repo_type, repo_id, revision, commit, path, what) -> HubFolder:
    def listing():
        return [(e.path, int(e.size)) for e in api.list_repo_tree(repo_id, path_in_repo=path or None,
                                                                   revision=commit, repo_type=repo_type)
                if hasattr(e, "size") and getattr(e, "blob_id", None) is not None]
    files = _call(listing, what=what)
    return HubFolder(repo_type, repo_id, revision, commit, path, files)


def _call(fn, *args, what: str, revision_name: str = "", **kwargs) -> Any:
    """Run a Hub client call with our timeout and cancel; its exceptions become ours (no chain kept)."""
    from huggingface_hub import errors as hf_errors
    try:
        return net.call_cancellable(fn, *args, limit_s=net.timeout_s() * 2, **kwargs)
    except RemoteError:
        raise
    except hf_errors.GatedRepoError:
        cls, message, hint = error_codes(what)["GatedRepo"]
        raise cls(message, hint=hint) from None
    except hf_errors.RevisionNotFoundError:
        raise RemoteNotFoundError(f"{what} has no revision {revision_name!r}" if revision_name
                                  else f"{what}: revision not found", hint="Check the revision after @.") from None
    except hf_errors.RepositoryNotFoundError:
        raise RemoteAccessError(f"repository {what} was not found, or it is private or gated", hint=LOGIN_HINT) \
            from None
    except (hf_errors.EntryNotFoundError, FileNotFoundError):
        raise RemoteNotFoundError(f"{what} has no such file", hint="Check the file name.") from None
    except hf_errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise RemoteAccessError(f"the Hub refused access to {what} (HTTP {status})", hint=LOGIN_HINT) from None
        raise RemoteError(f"the Hub answered HTTP {status or '?'} for {what}",
                          hint="Try again later." if status and status >= 500 else "") from None
    except Exception as e:       # noqa: BLE001 - httpx2 transport errors and the like; message redacted
        name = type(e).__name__
        if name == "OfflineModeIsEnabled":
            raise RemoteTimeoutError("HF_HUB_OFFLINE is set, so the Hub is not contacted") from None
        if "Timeout" in name or "Connect" in name or isinstance(e, (TimeoutError, ConnectionError)):
            raise RemoteTimeoutError(f"cannot reach the Hub at {urllib.parse.urlsplit(endpoint()).netloc} "
                                     f"({name})") from None
        raise net.as_remote_error(e, f"the Hub call for {what} failed") from None
