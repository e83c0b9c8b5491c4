"""Keeping pydicom's warnings and log records away from every sink.

pydicom's validation warnings and log records quote element values
(``Invalid value for VR PN: 'DOE^JANE'``).  The converter silences them around
its own calls (:func:`quiet_pydicom`); a process that exists to read DICOM (a
worker, a process of the converter's reading pool) switches them off for good
(:func:`silence_pydicom_for_good`), so nothing it imports later can route them
to a handler.
"""

from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def quiet_pydicom():
    """Within the block every warning is ignored and pydicom's logger is off;
    both are as they were afterwards."""
    logger = logging.getLogger("pydicom")
    before = (logger.level, logger.propagate, logger.disabled)
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(before[0])
        logger.propagate, logger.disabled = before[1], before[2]


def silence_pydicom_for_good() -> None:
    """Disable pydicom's logger, its warnings and its value validation in this
    process, from now on."""
    logger = logging.getLogger("pydicom")
    logger.disabled = True
    logger.propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
