"""The one exception family users see.

Every error a user can act on is a :class:`CheckpointError`. Its message says what happened, in which
file, and what the user can do about it, in the style of torch's ``weights_only`` message. Code that
reads untrusted bytes raises these and nothing else; anything else escaping the reader is a bug.
"""
from __future__ import annotations

import os

from .locations import location_name, shown_location


def join_sentences(first: str, *more: str) -> str:
    """Join a message and its hints as sentences: "no such file. Check the path." (not "no such file Check
    the path."). Each part after the first starts with a capital; a part that ends without punctuation gets a
    full stop before the next one. Empty parts are left out."""
    text = first.rstrip()
    for part in more:
        part = (part or "").strip()
        if not part:
            continue
        if text and text[-1] not in ".!?:;":
            text += "."
        text = f"{text} {part[0].upper()}{part[1:]}" if text else part
    return text


class CheckpointError(Exception):
    """Base class: something about a checkpoint file (or a request about one) cannot be done.

    ``path`` names the file when known; ``hint`` says what to do. ``str(err)`` is one readable line
    (plus the hint) suitable for a status bar, a dialog or stderr.
    """

    default_hint = ""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, hint: str | None = None):
        self.message = message
        # A URL is kept redacted: an error is shown, logged and copied, and must never carry a credential.
        self.path = shown_location(path) if path is not None else None
        self.hint = self.default_hint if hint is None else hint
        super().__init__(self._format())

    def _format(self) -> str:
        return join_sentences(f"{location_name(self.path)}: {self.message}" if self.path else self.message,
                              self.hint)

    def with_path(self, path: str | os.PathLike) -> "CheckpointError":
        """Return the same error naming ``path`` (used when a low layer did not know the file)."""
        if self.path is None:
            self.path = shown_location(path)
            self.args = (self._format(),)
        return self


class NotACheckpointError(CheckpointError):
    """The bytes are not any checkpoint format we know (an image, a text file, random bytes...)."""

    default_hint = ("Check that this is the file you meant: ckptviewer reads torch.save files (zip or legacy), "
                    "TorchScript archives and .safetensors files.")


class TruncatedFileError(CheckpointError):
    """The container ends before a structure it declares (a download that stopped early)."""

    default_hint = "The file is incomplete; download or copy it again."


class CorruptFileError(CheckpointError):
    """The container or its pickle is malformed in a way that stops reading."""

    default_hint = "The file is damaged or was not written by torch/safetensors."


class UnsupportedFormatError(CheckpointError):
    """A known container with a feature we cannot read (an encrypted zip, an unknown storage type...)."""


class StorageError(CheckpointError):
    """A tensor's bytes are missing, short, or outside the file."""

    default_hint = "This tensor's values cannot be read; the rest of the file can."


class LimitExceededError(CheckpointError):
    """A file asks for more work or memory than the reader allows (possibly a hostile file)."""

    default_hint = "The file may be hostile or corrupt; ckptviewer stopped reading it to stay safe."


class OperationError(CheckpointError):
    """A requested edit or export cannot be carried out (bad key path, collision, unsafe destination)."""


class CancelledError(CheckpointError):
    """Long work was cancelled by the user. Not a failure; callers usually swallow it."""

    def __init__(self, message: str = "cancelled", **kw):
        super().__init__(message, **kw)


class RemoteError(CheckpointError):
    """A checkpoint named by a URL could not be read over the network (the file itself may be fine).

    Messages never hold credentials: URLs in them are redacted (``core.util.locations.redact``)."""


class RemoteNotFoundError(RemoteError):
    """The server, bucket or repository has no such file (HTTP 404)."""

    default_hint = "Check the URL."


class RemoteAccessError(RemoteError):
    """The server refused access (HTTP 401/403, a gated or private repository, missing cloud credentials)."""


class RemoteTimeoutError(RemoteError):
    """The server did not answer in time, or could not be reached, even after retrying."""

    default_hint = "Check the network connection and try again."


class RemoteProtocolError(RemoteError):
    """The server answered, but not with the file: an HTML page, a range it did not honour, bytes that
    changed while they were read."""


class OfflineMissError(RemoteError):
    """The server cannot be reached and the bytes asked for were never fetched into the cache."""

    default_hint = "Connect to the network and try again; only what was read before is available offline."


class MissingDependencyError(CheckpointError):
    """Reading this location needs an optional package that is not installed (s3fs, gcsfs, ...)."""
