"""pydicom's warnings and log records (which quote DICOM values) reach no sink."""

import logging
import subprocess
import sys
import warnings

from converter import quiet_pydicom

CANARY = "DOE^CANARY"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def test_quiet_pydicom_holds_back_warnings_and_log_records_and_restores_them():
    logger = logging.getLogger("pydicom")
    handler = Collect()
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_pydicom():
                warnings.warn(f"Invalid value for VR PN: '{CANARY}'", stacklevel=1)
                logger.warning("Invalid value for VR PN: '%s'", CANARY)
            assert seen == [] and handler.records == []
            assert not logger.disabled
            warnings.warn("after the block", stacklevel=1)
            logger.warning("after the block")
        assert [str(w.message) for w in seen] == ["after the block"]
        assert handler.records == ["after the block"]
    finally:
        logging.getLogger().removeHandler(handler)


def test_silence_pydicom_for_good_stops_validation_warnings_in_the_process():
    code = (
        "import logging, warnings\n"
        "warnings.simplefilter('always')\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from converter import silence_pydicom_for_good\n"
        "silence_pydicom_for_good()\n"
        "from pydicom import config\n"
        "from pydicom.dataelem import DataElement\n"
        f"DataElement(0x00100030, 'DA', '{CANARY}')\n"  # not a date: pydicom warns and logs
        "logging.getLogger('pydicom').warning('%s', 'DOE^CANARY')\n"
        "print(config.settings.reading_validation_mode == config.IGNORE)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]
    assert CANARY not in out.stdout + out.stderr
