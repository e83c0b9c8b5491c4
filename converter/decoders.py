"""Which pixel decoders pydicom may use, and which exceptions are a decoder's failure.

GDCM throws uncaught C++ exceptions on malformed JPEG, JPEG-LS and JPEG
2000 streams (the process dies by SIGABRT).  Every syntax it decodes here
is decoded as well by a pylibjpeg plugin (libjpeg, openjpeg; checked on
pydicom's and pydicom-data's test files), which fails with Python
exceptions; so :func:`prefer_safe_decoders` drops GDCM from every syntax
some other plugin decodes, and it remains only where it is the one decoder
installed.  pydicom's order is kept otherwise: pylibjpeg first, then Pillow
(JPEG, JPEG 2000) or pydicom's own RLE decoder.

Decoders raise more than ``Exception``: the RLE decoder's Rust panics are
``PanicException``, a ``BaseException``.  :func:`is_decoder_failure` tells
those from what must pass through untouched: the interpreter's own
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``), running out of
memory, and a job runner's timeout (RQ's ``JobTimeoutException``, an
``Exception`` the converter cannot import: recognised by its module and
name).
"""

from __future__ import annotations

from .codestream import _J2K, _JPEG, _JPEG_LS, _RLE
from .errors import is_out_of_memory

_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)
#: exception class names that are a caller's time limit, whatever their module
_TIMEOUT_NAMES = frozenset(("JobTimeoutException", "BaseTimeoutException",
                            "HorseMonitorTimeoutException", "TimeoutException"))
_RUNNER_MODULES = ("rq",)

_configured = False


def prefer_safe_decoders() -> None:
    """Drop GDCM from each syntax another installed plugin decodes (once a process)."""
    global _configured
    if _configured:
        return
    from pydicom.pixels import get_decoder


    for uid in sorted(_JPEG | _JPEG_LS | _J2K | {_RLE}):
        try:
            decoder = get_decoder(uid)
        except (NotImplementedError, ValueError, KeyError):
            continue  # a syntax pydicom has no decoder for
        plugins = decoder.available_plugins
        if "gdcm" in plugins and len(plugins) > 1:
            decoder.remove_plugin("gdcm")
    _configured = True


def is_decoder_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised while decoding, means the pixel data cannot be
    decoded (rather than a stop, a timeout or no memory, which pass through)."""
    if isinstance(exc, _PASS_THROUGH) or is_out_of_memory(exc):
        return False
    for cls in type(exc).__mro__:
        if cls.__name__ in _TIMEOUT_NAMES:
            return False
        if cls.__module__.split(".")[0] in _RUNNER_MODULES:
            return False
    return True


def decodable_syntaxes() -> tuple[str, ...]:
    """Every transfer syntax this installation can read pixel data of: the
    native ones, and each encapsulated one with a decoder installed (what a
    DICOM receiver may accept)."""
    from pydicom.pixels import get_decoder

    from .codestream import NATIVE

    found = set(NATIVE)
    for uid in _JPEG | _JPEG_LS | _J2K | {_RLE}:
        try:
            if get_decoder(uid).is_available:
                found.add(uid)
        except (NotImplementedError, ValueError, KeyError):
            continue
    return tuple(sorted(found))
