"""One direction of imports (DESIGN.md): runtime <- measurement <- search <- orchestration <- interfaces.

Two checks: every ``import sol.…`` in the source (lazy ones inside functions included) goes
down the layers, and what an inference server loads to apply a plan — the runtime — pulls in
none of the optimizer's packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sol

ROOT = Path(sol.__file__).parent
LAYER = {
    "sol": 0, "sol.errors": 0, "sol.hardware": 0, "sol.plan": 0, "sol.runtime": 0, "sol.workload": 0,
    "sol.hooks": 0, "sol.models": 0, "sol.kernels": 0, "sol.skills": 0, "sol.video": 0,
    "sol.bench": 1, "sol.quality": 1,
    "sol.integrator": 2,
    "sol.agent": 3, "sol.cluster": 3,
    "sol.cli": 4, "sol.review": 4, "sol.report": 4,
}  # fmt: skip
# The skills package holds each technique's runtime part and its search space; search code may
# measure (import sol.bench / sol.quality), inside functions, since the runtime must not load it.
SEARCH_CODE_MAY_MEASURE = {"sol.skills"}


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYER:
            return key, LAYER[key]
    raise AssertionError(f"{module} is in no layer: add it to LAYER")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno


def test_imports_go_down_the_layers():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        mod = ".".join(rel.parts).removesuffix(".__init__")
        here, lvl = _layer(mod)
        for target, line in _imports(path):
            if not target.startswith("sol.") and target != "sol":
                continue
            there, tlvl = _layer(target)
            if tlvl <= lvl or (here in SEARCH_CODE_MAY_MEASURE and tlvl == 1):
                continue
            bad.append(f"{rel}.py:{line}: {here} (layer {lvl}) imports {target} (layer {tlvl})")
        if here == "sol.cluster":
            bad += [
                f"{rel}.py:{ln}: sol.cluster imports {t}"
                for t, ln in _imports(path)
                if t.startswith("sol.agent")
            ]
    assert not bad, "\n".join(bad)


def test_the_runtime_loads_none_of_the_optimizer():
    code = """
import sys
import sol, sol.runtime, sol.plan, sol.models, sol.hooks, sol.kernels, sol.workload
from sol.skills.base import registered_kinds
registered_kinds()
print("\\n".join(sorted(sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = set(out)
    forbidden = ["ray", "langgraph", "torchmetrics", "typer", "matplotlib", "rich", "fastapi",
                 "sol.bench", "sol.quality", "sol.agent", "sol.integrator", "sol.report", "sol.cluster",
                 "sol.review", "sol.cli"]  # fmt: skip
    assert not [m for m in forbidden if m in loaded or any(x.startswith(m + ".") for x in loaded)]
    assert "sol.skills.cache" in loaded and "sol.skills.quantization" in loaded  # skills did register
