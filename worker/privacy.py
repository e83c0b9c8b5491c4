"""Keeping DICOM values out of every log sink of a worker process.

pydicom's validation warnings and log records quote element values
(``Invalid value for VR PN: 'DOE^JANE'``).  The converter silences them
around its own calls; a worker process also switches them off for good, so
nothing it imports later can route them to a handler.
"""

from __future__ import annotations

import logging
import warnings


def quiet_pydicom() -> None:
    """Disable pydicom's logger and its warnings in this process."""
    logger = logging.getLogger("pydicom")
    logger.disabled = True
    logger.propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    try:
        from pydicom import config  # noqa: PLC0415
    except ImportError:  # pragma: no cover - pydicom is a dependency
        return
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
