"""The code base stays clean under the project's ruff configuration, and the
converter stays a pure library (imports point web → worker → converter)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    folders = [d for d in ("converter", "web", "worker", "tests", "bench") if (ROOT / d).is_dir()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *folders], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def imported_modules(package):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield path, node.module


def test_converter_is_pure():
    forbidden = ("flask", "rq", "redis", "sqlalchemy", "worker", "web", "werkzeug")
    bad = [(str(p.relative_to(ROOT)), m) for p, m in imported_modules("converter")
           if m.split(".")[0] in forbidden]
    assert bad == []


def test_worker_never_imports_web():
    if not (ROOT / "worker").exists():
        return
    bad = [(str(p.relative_to(ROOT)), m) for p, m in imported_modules("worker")
           if m.split(".")[0] in ("web", "flask")]
    assert bad == []
