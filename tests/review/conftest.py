"""Paused runs for the review app's tests: one real run, then cheap copies of it.

The base run is a real ``sol optimize`` graph (LangGraph + SQLite, the local executor) on the tiny
random Wan with one test-only skill, ``test.memo``: it memoises the transformer's output per input, so
its videos are bit-identical (it passes every quality check) and, once warm, it skips the transformer
(it beats the baseline's interval). That makes a run that pauses for approval in tens of seconds.

A copy re-drives the same graph in a new run folder seeded with the base run's job results (the jobs
reuse a result file when present, as a resumed run does): the gate, the report and the approval pause
run for real, in seconds. VBench is switched off here (``SOL_VBENCH_PYTHON`` points nowhere): its own
tests cover it.
"""

from __future__ import annotations

import json
import shutil
from typing import Literal

import pytest
import torch

from sol.hooks import Installation, ModelHook
from sol.skills import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.base import unregister_skill

TINY = {"name": "tiny", "prompts": ["a red circle moving right"], "num_frames": 5, "height": 32, "width": 32,
        "num_inference_steps": 2, "guidance_scale": 4.5}  # fmt: skip


class Memo(TechniqueConfig):
    kind: Literal["test.memo"] = "test.memo"


class _Memo(ModelHook):
    def __init__(self):
        super().__init__()
        self.cache: dict = {}

    def new_forward(self, module, *args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        key = tuple((tuple(t.shape), hash(t.detach().float().cpu().numpy().tobytes())) for t in tensors)
        if key not in self.cache:
            self.cache[key] = self.fn_ref.original_forward(*args, **kwargs)
        return self.cache[key]


@pytest.fixture(scope="module")
def memo_skill():
    @register_skill(Memo)
    class MemoSkill(Skill):
        name = "testmemo"
        phase = Phase.STEPS
        writes = frozenset({Seam.STEP_OUTPUT, Seam.KERNEL_FUSION})  # unmodelled: the race times it

        def apply(self, pipe, config, adapter):
            inst = Installation(config.kind)
            inst.hook(adapter.transformer, _Memo(), "test_memo", root=adapter.transformer)
            return inst

        def examples(self):
            return [Memo()]

        def search_space(self, context):
            return [Memo()]

    yield
    unregister_skill(Memo)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, memo_skill):
    """``(runs_dir, paused)``: ``paused()`` makes a new run that waits for approval."""
    from sol.agent import driver

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOL_VBENCH_PYTHON", "/nonexistent/python")
        root = tmp_path_factory.mktemp("review")
        runs_dir = root / "runs"
        wl = root / "tiny.json"
        wl.write_text(json.dumps(TINY))
        base = driver.start(model="tiny-wan-random", gpu="cpu", workload=str(wl), effort="quick",
                            skills=["testmemo"], executor="local", approve="manual", runs_dir=runs_dir)  # fmt: skip
        assert base.status == "awaiting approval", base.status
        count = [0]

        def paused() -> str:
            count[0] += 1
            run_dir = runs_dir / f"copy-{count[0]}"
            run_dir.mkdir()
            for name in ("profile.json", "integration-1.json", "skills", "progress"):
                src = base.run_dir / name
                (shutil.copytree if src.is_dir() else shutil.copyfile)(src, run_dir / name)
            spec = {**json.loads((base.run_dir / "run.json").read_text()), "run_id": run_dir.name,
                    "run_dir": str(run_dir.resolve())}  # fmt: skip
            (run_dir / "run.json").write_text(json.dumps(spec))
            out = driver.drive(run_dir, {"spec": spec})
            assert out.status == "awaiting approval", out.status
            return run_dir.name

        yield runs_dir, paused
