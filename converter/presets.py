"""Surface presets: which isovalue to use, in modality units.

CT presets are Hounsfield units; the surface encloses the voxels whose value
is above the isovalue, except ``airway``, which encloses air inside the body.

======== ======== ===========================================================
preset   HU       what it gives
======== ======== ===========================================================
bone     300      cortical and dense trabecular bone
skin     -400     the air/skin boundary: the body's outer surface
soft-tissue 20    muscle and organs (fat, about -100 HU, is left out)
teeth    1200     enamel and dentine, above the surrounding bone
airway   -400     air inside the body (trachea, bronchi, sinuses); air that
                  touches the edge of the scan (outside the body) is removed
auto     Otsu     a threshold between the two main intensity classes; the
                  default for MR and other non-CT modalities
======== ======== ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    level: float | None  # None: computed (auto)
    label: str  # what people are shown (the upload page, --help)
    inverted: bool = False  # True: the region below the level (airway)
    ct_only: bool = True


PRESETS = {p.name: p for p in (
    Preset("bone", 300.0, "Bone (300 HU)"),
    Preset("skin", -400.0, "Skin (−400 HU)"),
    Preset("soft-tissue", 20.0, "Soft tissue (20 HU)"),
    Preset("teeth", 1200.0, "Teeth (1200 HU)"),
    Preset("airway", -400.0, "Airway (air inside the body)", inverted=True),
    Preset("auto", None, "Automatic (Otsu; the default for MR)", ct_only=False),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", code="invalid_preset"
        ) from None


def otsu_level(data: np.ndarray, max_samples: int = 2_000_000) -> float:
    """Otsu's threshold of the volume (on a regular subsample for speed)."""
    from skimage.filters import threshold_otsu  # 0.2-0.3 s to import: only for "auto"

    step = max(1, int(np.ceil((data.size / max_samples) ** (1 / 3))))
    sample = data[::step, ::step, ::step]
    if sample.min() == sample.max():
        return float(sample.min())
    return float(threshold_otsu(sample))
