"""Errors raised by the converter.

Every error carries a stable ``code`` (used by the API and stored by the
worker), a safe human ``message`` and the CLI ``exit_code`` (``exits.Exit``).  Messages never
contain DICOM values, UIDs or file names: they describe the problem in terms
of counts, kinds and numbers the converter computed itself.
"""

from __future__ import annotations

from .exits import Exit


class ConverterError(Exception):
    """Base class: a problem with the input or the request, not a bug."""

    code = "conversion_failed"
    exit_code = Exit.NO_SERIES

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message

    def as_dict(self) -> dict:
        """Return ``{"code": ..., "message": ...}`` for reports and APIs."""
        return {"code": self.code, "message": self.message}


class UsageError(ConverterError):
    """The request itself is invalid (bad option value, unknown preset)."""

    code = "invalid_option"
    exit_code = Exit.USAGE


class NoUsableSeries(ConverterError):
    """The input was read but holds nothing that can be converted.

    Codes: ``empty_input``, ``no_dicom``, ``only_non_image``, ``no_geometry``,
    ``single_slice``, ``series_not_found``, ``no_surface``.
    """

    code = "no_usable_series"
    exit_code = Exit.NO_SERIES


class UnreadableInput(ConverterError):
    """The input cannot be read or decoded.

    Codes: ``not_found``, ``bad_archive``, ``codec_missing``,
    ``corrupt_header``, ``corrupt_pixel_data``, ``too_large``.
    """

    code = "unreadable_input"
    exit_code = Exit.UNREADABLE


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means memory ran out: a failed allocation, or a thread
    that could not start because its stack could not be mapped (what a
    process under an address-space limit sees first)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and str(exc) == "can't start new thread")
