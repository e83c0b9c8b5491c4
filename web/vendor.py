"""three.js, served by the app from ``web/node_modules`` (installed from the
npm registry by ``scripts/setup.sh``; no CDN).

The loader and the controls import the bare name ``'three'``; without an
import map (which would need inline script) the browser cannot resolve it,
so they are served with that import rewritten to the file beside them.
"""

from __future__ import annotations

import functools
from pathlib import Path

THREE = Path(__file__).resolve().parent / "node_modules" / "three"

FILES = {
    "three.module.js": "build/three.module.js",
    "three.core.js": "build/three.core.js",
    "STLLoader.js": "examples/jsm/loaders/STLLoader.js",
    "OrbitControls.js": "examples/jsm/controls/OrbitControls.js",
}


@functools.cache
def read(name: str) -> bytes | None:
    """The file's bytes, or None when it is not one we serve (or not installed)."""
    rel = FILES.get(name)
    if rel is None:
        return None
    try:
        text = (THREE / rel).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    text = text.replace("from 'three';", "from './three.module.js';")
    text = text.replace('from "three";', "from './three.module.js';")
    return text.encode("utf-8")


def installed() -> bool:
    return all((THREE / rel).is_file() for rel in FILES.values())
