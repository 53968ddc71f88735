"""Object stores and every other fsspec protocol: ``s3://`` (s3fs), ``gs://`` (gcsfs), and whatever else is
installed (``abfs://``, ``sftp://``, ...). Credentials come from each library's standard chain (AWS
profiles and environment variables, Google application-default credentials, ...); nothing is stored here.

Object stores honour byte ranges, so each range is one ``cat_file(path, start=..., end=...)`` (s3fs's
second positional parameter is a version id: start and end always go by keyword), fetched concurrently on
the file system's own loop for the asynchronous ones, and length-checked. A missing package is named with
the extra that installs it (``ckptviewer[s3]``, ``ckptviewer[gcs]``).

Hazard: gcsfs (2026.10) makes a gRPC "storage layout" probe on every call unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is ``false`` when it is imported; against anything but Google's own
endpoint each probe costs 30-45 s. It is set (unless the user set it) before gcsfs is imported.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from ..util.errors import (
    MissingDependencyError,
    RemoteAccessError,
    RemoteError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteTimeoutError,
)
from . import net

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
ACCESS_HINTS = {
    "s3": "Check your AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws) and the "
          "bucket's permissions.",
    "gs": "Check your Google credentials (gcloud auth application-default login or "
          "GOOGLE_APPLICATION_CREDENTIALS) and the bucket's permissions.",
}
DOWNLOAD_CHUNK = 8 << 20
_VALIDATORS = ("ETag", "etag", "generation", "md5Hash", "crc32c", "VersionId", "version_id", "checksum", "sha256")
_TIMES = ("LastModified", "last_modified", "mtime", "updated", "modified", "created")


def family(protocol: str) -> str:
    return {"s3a": "s3", "gcs": "gs"}.get(protocol, protocol)


def filesystem(protocol: str, **options: Any) -> Any:
    """The fsspec file system for ``protocol`` (cached by fsspec), or an error naming what to install."""
    import fsspec
    if family(protocol) == "gs":
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as e:
        extra = EXTRAS.get(protocol)
        if extra:
            raise MissingDependencyError(
                f"reading {protocol}:// URLs needs the {'s3fs' if extra == 's3' else 'gcsfs'} package",
                hint=f'Install it with: pip install "ckptviewer[{extra}]"') from None
        raise MissingDependencyError(f"reading {protocol}:// URLs needs a package that is not installed "
                                     f"({net.safe_message(e)})", hint="Install it with pip.") from None
    except ValueError:
        raise RemoteNotFoundError(f"no installed file system reads {protocol}:// URLs",
                                  hint="ckptviewer reads http(s)://, hf://, s3:// and gs:// (and any other "
                                       "protocol an installed fsspec package provides).") from None


def store_key(protocol: str) -> str:
    """What besides the URL tells two stores apart (a local S3 stand-in is not AWS)."""
    if family(protocol) == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if family(protocol) == "gs":
        return os.environ.get("STORAGE_EMULATOR_HOST") or ""
    return ""


class StoreBackend:
    """One object of an fsspec file system."""

    def __init__(self, protocol: str, path: str, shown: str):
        self.protocol = protocol
        self.fs = filesystem(protocol)
        self.path = path
        self.shown = shown
        self.size: int | None = None

    def info(self) -> dict:
        return self._call(self.fs.info, self.path)

    def validator(self, info: dict) -> str | None:
        for k in _VALIDATORS:
            v = info.get(k)
            if v:
                return f"{k}:{v}"
        for k in _TIMES:
            v = info.get(k)
            if v:
                return f"{k}:{v}:{info.get('size')}"
        return None

    def listing(self) -> list[tuple[str, int]]:
        entries = self._call(self.fs.ls, self.path, detail=True)
        return [(str(e.get("name", "")).rsplit("/", 1)[-1], int(e.get("size") or 0)) for e in entries
                if e.get("type") == "file"]

    def fetch(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        fs = self.fs
        if getattr(fs, "async_impl", False) and getattr(fs, "loop", None) is not None:
            async def all_ranges():
                return await asyncio.gather(*(fs._cat_file(self.path, start=s, end=e) for s, e in ranges))
            fut = asyncio.run_coroutine_threadsafe(all_ranges(), fs.loop)
            datas = self._guard(lambda: net.wait_future(fut))
        else:
            datas = [self._call(fs.cat_file, self.path, start=s, end=e) for s, e in ranges]
        for (s, e), data in zip(ranges, datas):
            if len(data) != e - s:
                raise RemoteProtocolError(f"the store sent {len(data):,} bytes for a range of {e - s:,}")
        net.STATS.add(sum(len(d) for d in datas), len(ranges))
        return datas

    def download(self, write: Callable[[bytes], Any], on_progress: Callable[[int], None]) -> int:
        done = 0

        def chunks():
            nonlocal done
            with self.fs.open(self.path, "rb", block_size=DOWNLOAD_CHUNK, cache_type="none") as f:
                while True:
                    piece = f.read(DOWNLOAD_CHUNK)
                    if not piece:
                        return
                    write(piece)
                    done += len(piece)
                    net.STATS.add(len(piece))
        self._call(chunks, timeout=None, on_tick=lambda: on_progress(done))
        return done

    # -- errors --------------------------------------------------------------------------------------
    def _call(self, fn, *args, timeout: float | None = -1, on_tick=None, **kwargs) -> Any:
        limit = net.timeout_s() * 4 if timeout == -1 else timeout
        return self._guard(lambda: net.call_cancellable(fn, *args, limit_s=limit, on_tick=on_tick, **kwargs))

    def _guard(self, run: Callable[[], Any]) -> Any:
        try:
            return run()
        except RemoteError:
            raise
        except FileNotFoundError:
            raise RemoteNotFoundError("no such object (or bucket)", hint="Check the URL.") from None
        except PermissionError as e:
            raise RemoteAccessError(f"access denied ({net.safe_message(e)})",
                                    hint=ACCESS_HINTS.get(family(self.protocol), "")) from None
        except Exception as e:  # noqa: BLE001 - botocore/google/asyncio errors; message redacted
            name = type(e).__name__
            if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                        "RefreshError", "ClientAuthenticationError"):
                raise RemoteAccessError(f"no usable credentials ({name})",
                                        hint=ACCESS_HINTS.get(family(self.protocol), "")) from None
            if "Timeout" in name or name in ("EndpointConnectionError", "ConnectionClosedError",
                                              "ClientConnectorError", "ServerDisconnectedError") \
                    or isinstance(e, (TimeoutError, ConnectionError)):
                raise RemoteTimeoutError(f"cannot reach the store ({name})") from None
            raise net.as_remote_error(e, f"reading {self.protocol}:// failed") from None
