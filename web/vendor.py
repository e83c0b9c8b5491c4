"""The browser's libraries, served by the app from ``web/node_modules``
(installed from the npm registry by ``scripts/setup.sh`` with ``npm ci``
from ``web/package-lock.json``; no CDN): three.js for the preview,
dicom-parser and fflate for the de-identification before upload.

three.js's loader and controls import the bare name ``'three'``; without an
import map (which would need inline script) the browser cannot resolve it,
so they are served with that import rewritten to the file beside them.
dicom-parser is a UMD bundle, loaded as a classic script (the global
``dicomParser``); fflate's browser build is an ES module.
"""

from __future__ import annotations

import functools
from pathlib import Path

MODULES = Path(__file__).resolve().parent / "node_modules"

#: package -> {name served: path in the package}
FILES = {
    "three": {
        "three.module.js": "build/three.module.js",
        "three.core.js": "build/three.core.js",
        "STLLoader.js": "examples/jsm/loaders/STLLoader.js",
        "OrbitControls.js": "examples/jsm/controls/OrbitControls.js",
    },
    "dicom-parser": {"dicomParser.min.js": "dist/dicomParser.min.js"},
    "fflate": {"fflate.js": "esm/browser.js"},
}


def _path(package: str, name: str) -> Path | None:
    rel = FILES.get(package, {}).get(name)
    return None if rel is None else MODULES / package / rel


@functools.cache
def read(package: str, name: str) -> bytes | None:
    """The file's bytes, or None when it is not one we serve (or not installed)."""
    path = _path(package, name)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if package == "three":
        text = text.replace("from 'three';", "from './three.module.js';")
        text = text.replace('from "three";', "from './three.module.js';")
    return text.encode("utf-8")


def installed(package: str = "three") -> bool:
    return all((MODULES / package / rel).is_file() for rel in FILES[package].values())
