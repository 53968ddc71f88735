"""Test setup shared by every test: headless Qt, isolated settings, checkpoints built at test time."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Qt must never need a display in tests, and must not read or write the user's settings.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

REPO = TESTS.parent
SHARED = REPO.parent / "shared"

# Subprocesses (the CLI, import checks) run this checkout's package, wherever their working folder is and
# whatever copy of ckptviewer the interpreter may have installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """A folder of checkpoints made by torch for the cases DESIGN.md lists (see makers.py)."""
    import makers
    return makers.build_all(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="session")
def conformance_dir(tmp_path_factory):
    """The shared conformance fixtures, generated once per session; skipped where ../shared is absent."""
    script = SHARED / "conformance" / "make_fixtures.py"
    if not script.exists():
        pytest.skip("../shared/conformance is not available here")
    import subprocess
    out = tmp_path_factory.mktemp("conformance")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture
def marker(tmp_path):
    """A path that hostile payloads would create; tests assert it never appears."""
    return tmp_path / "PWNED"
