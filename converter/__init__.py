"""ephemesh converter: a DICOM series in, a closed STL surface out.

A pure library: no web framework, queue or Redis.  The public API::

    from converter import convert, list_series, ConvertOptions
    listing = list_series(["scan/"])          # .series, .skipped, .warnings
    result = convert(["scan/"], ConvertOptions(preset="bone"), output="bone.stl")
    result.report["volume_mm3"]

The compiled kernels (:mod:`converter._marching`, :mod:`converter._mesh`) are
built by the install and load with the modules that use them.
"""

from .errors import ConverterError, NoUsableSeries, UnreadableInput, UsageError
from .pipeline import ConversionResult, ConvertOptions, convert, list_series
from .presets import PRESETS
from .quiet import quiet_pydicom, silence_pydicom_for_good

__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "ConverterError",
    "NoUsableSeries",
    "PRESETS",
    "UnreadableInput",
    "UsageError",
    "convert",
    "list_series",
    "quiet_pydicom",
    "silence_pydicom_for_good",
]
