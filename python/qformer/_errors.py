"""The exceptions of qformer. Every one is a ``qformer.Error``; its message is the one the
``qformer`` and ``quantize`` command lines print after ``error:``."""

from __future__ import annotations

__all__ = ["Error", "FileError", "BlobError", "CheckpointError", "InputError", "VerificationError"]


class Error(Exception):
    """Base class of every qformer error. A bug (a panic inside the Rust code) is raised as
    this class itself, with a message starting ``internal error``."""


class FileError(Error, OSError):
    """A file could not be opened, read, mapped or written (an operating-system error)."""


class BlobError(Error):
    """The file is not a valid qformer blob (format, version, checksum, layout or contents)."""


class CheckpointError(Error):
    """``quantize`` or ``verify`` could not use the checkpoint: a missing or misshapen tensor,
    a bad config, a missing tokenizer, a blob not made from it, a refused output."""


class InputError(Error, ValueError):
    """A bad argument: image features of the wrong dtype, shape, width or token count, NaN or
    infinite values, non-contiguous arrays, bad token ids or mask, an instruction for a blob
    without text parts, too many threads, a bad dtype or group."""


class VerificationError(Error):
    """``verify(..., min_cosine=x)``: an output's cosine similarity is below ``x``. The table
    is in ``.table``."""

    table: list

    def __init__(self, message: str, table: list | None = None) -> None:
        super().__init__(message)
        self.table = table if table is not None else []
