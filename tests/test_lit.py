"""Runs the lit + FileCheck suite under tests/lit as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

LIT_DIR = Path(__file__).resolve().parent / "lit"


def test_lit_suite_passes():
    lit = shutil.which("lit") or str(Path(sys.executable).parent / "lit")
    assert shutil.which("filecheck") or (Path(sys.executable).parent / "filecheck").exists(), (
        "filecheck is not installed (pip install -e '.[test]')"
    )
    proc = subprocess.run([lit, "-sv", str(LIT_DIR)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Passed" in proc.stdout
