"""Modality: the DICOM defined terms, and nothing else past the header readers.

The Modality element (0008,0060) is a CS value the file may fill with any
text (899 characters have been seen).  Both header readers map it through
:func:`modality_term` at the door, so reports, records and manifests only
ever hold one of the defined terms of PS3.3 C.7.3.1.1.1 (current and
retired), or ``OT`` (other) for anything else.
"""

from __future__ import annotations

#: PS3.3 C.7.3.1.1.1 Modality defined terms (2024), retired terms included
DEFINED_TERMS = frozenset("""
    ANN AR ASMT AU BDUS BI BMD CFM CT CTPROTOCOL DMS DG DOC DX ECG EEG EMG EOG EPS ES FID
    GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF
    OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD
    RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA
    XAPROTOCOL XC
    AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF
""".split())
OTHER = "OT"


def modality_term(value) -> str:
    """``value`` (text, or anything str() can render) as a defined term, else ``OT``."""
    if not isinstance(value, str):
        return OTHER
    term = value.strip(" \0").upper()
    return term if term in DEFINED_TERMS else OTHER
