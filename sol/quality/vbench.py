"""VBench dimensions of a workload's videos, computed by VBench in its own environment.

vbench 0.1.5 pins numpy<2 and transformers==4.33.2, so it cannot be imported into Sol's
environment. ``run_vbench`` writes the videos as lossless mp4s, runs ``vbench_runner.py`` with the
VBench interpreter (``make vbench-env`` builds ``.venv-vbench``) and reads back its JSON.

Every requested dimension gets an entry: ``{"score": float, "videos": [float, ...]}`` when VBench
computed it, otherwise ``{"available": False, "reason": "not available: ..."}`` — the environment
is missing, the dimension's weights are not in the VBench cache (they are never downloaded), or the
dimension needs VBench's own prompt suite.

>>> import numpy as np
>>> videos = [np.random.default_rng(0).random((9, 32, 32, 3), dtype=np.float32)]
>>> run_vbench(videos, ["temporal_flickering"], workdir="/tmp/vb")  # doctest: +SKIP
{'temporal_flickering': {'score': 0.66..., 'videos': [0.66...]}}
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sol.quality.video import VideoLike, load_video, write_mp4

RUNNER = Path(__file__).with_name("vbench_runner.py")
ENV_VAR = "SOL_VBENCH_PYTHON"
NO_ENV_REASON = "not available: vbench environment missing (make vbench-env)"

# Files VBench 0.1.5's loaders read for each dimension (vbench/utils.py init_submodules, the
# aesthetic head in aesthetic_quality.py, the ViCLIP tokenizer in third_party/ViCLIP), relative to
# its cache (VBENCH_CACHE_DIR or ~/.cache/vbench). When one is missing VBench would wget it, so Sol
# checks first and reports the dimension as not available instead.
WEIGHTS: dict[str, tuple[str, ...]] = {
    "temporal_flickering": (),
    "subject_consistency": (
        "dino_model/facebookresearch_dino_main/hubconf.py",
        "dino_model/dino_vitbase16_pretrain.pth",
    ),
    "background_consistency": ("clip_model/ViT-B-32.pt",),
    "motion_smoothness": ("amt_model/amt-s.pth",),
    "dynamic_degree": ("raft_model/models/raft-things.pth",),
    "aesthetic_quality": ("clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"),
    "imaging_quality": ("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",),
    "temporal_style": ("ViCLIP/ViClip-InternVid-10M-FLT.pth", "ViCLIP/bpe_simple_vocab_16e6.txt.gz"),
    "overall_consistency": ("ViCLIP/ViClip-InternVid-10M-FLT.pth", "ViCLIP/bpe_simple_vocab_16e6.txt.gz"),
    "human_action": ("umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth",),
}
# These score a video against VBench's fixed prompt suite; custom prompts cannot be scored.
STANDARD_PROMPTS_ONLY = (
    "object_class",
    "multiple_objects",
    "color",
    "spatial_relationship",
    "scene",
    "appearance_style",
)
# The weight-free dimension: it always runs when the environment exists.
DEFAULT_DIMENSIONS = ("temporal_flickering",)
# What the main job's gate asks for: every dimension that scores any video without its prompt (the
# text-aware ones, temporal_style and overall_consistency, and human_action's prompt-derived labels
# are left out). Those whose weights are absent come back "not available: weights missing", and the
# report lists them as not measured.
GATE_DIMENSIONS = (
    "temporal_flickering",
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
)


def vbench_cache_dir(weights: str | Path | None = None) -> Path:
    """Where VBench's weights are: ``weights`` (``--vbench-weights``) when given, else VBench's own
    cache, ``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench`` (as vbench/utils.py)."""
    if weights is not None:
        return Path(weights).expanduser().resolve()
    return Path(os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench")


def check_weights_dir(weights: str | Path) -> Path:
    """``weights`` as a folder laid out as VBench's cache, or a one-line ``SolError`` (before any run).

    >>> check_weights_dir("/nonexistent")  # doctest: +SKIP
    SolError: --vbench-weights /nonexistent: no such folder; ...
    """
    from sol.errors import SolError

    path = Path(weights).expanduser()
    if not path.is_dir():
        raise SolError(
            f"--vbench-weights {weights}: no such folder; give a folder laid out as VBench's cache"
            " (clip_model/ViT-B-32.pt, dino_model/…; see docs/quality.md)"
        )
    return path.resolve()


def measurable(
    dimensions: list[str] | tuple[str, ...], weights: str | Path | None = None
) -> dict[str, str | None]:
    """For each dimension, None when it can run from local files, else why not (what the report lists)."""
    cache = vbench_cache_dir(weights)
    return {d: dimension_status(d, cache) for d in dimensions}


def unmeasured(dimensions: list[str] | tuple[str, ...], weights: str | Path | None = None) -> dict[str, str]:
    """The ``dimensions`` that cannot run from local files, each with why and the fix: what the gate
    records and the report lists as not measured (``measurable`` gives the raw reasons).

    >>> unmeasured(["temporal_flickering", "background_consistency"], "/empty")  # doctest: +SKIP
    {'background_consistency': 'weights not found in --vbench-weights /empty (missing clip_model/ViT-B-32.pt)'}
    """
    cache = vbench_cache_dir(weights)
    out = {}
    for dim, reason in measurable(dimensions, weights).items():
        if reason is None:
            continue
        missing = missing_weights(dim, cache)
        if missing:  # the one a user can fix: say where Sol looked and how to point it elsewhere
            where = (
                f"--vbench-weights {cache}"
                if weights is not None
                else f"VBench's cache {cache} (or pass --vbench-weights DIR)"
            )
            reason = f"weights not found in {where}; missing {', '.join(missing)}"
        out[dim] = reason
    return out


def not_scored(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The dimensions of a ``run_vbench`` result that got no score, each with VBench's reason."""
    return {d: str(r.get("reason", "not available")) for d, r in results.items() if "score" not in r}


def find_vbench_python(vbench_python: str | Path | None = None) -> Path | None:
    """The VBench interpreter: the argument, ``$SOL_VBENCH_PYTHON``, then ``.venv-vbench/bin/python``
    in the current folder or beside the ``sol`` package (a source checkout). None when none exists."""
    if vbench_python is not None:
        candidates = [Path(vbench_python)]
    elif os.environ.get(ENV_VAR):
        candidates = [Path(os.environ[ENV_VAR])]
    else:
        repo = Path(__file__).resolve().parents[2]
        candidates = [Path.cwd() / ".venv-vbench/bin/python", repo / ".venv-vbench/bin/python"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def missing_weights(dimension: str, cache: Path) -> list[str]:
    """The checkpoint files ``dimension`` needs that ``cache`` lacks (paths relative to it)."""
    return [rel for rel in WEIGHTS.get(dimension, ()) if not (cache / rel).is_file()]


def dimension_status(dimension: str, cache_dir: Path | None = None) -> str | None:
    """None when ``dimension`` can run from local files, else why not (never downloads)."""
    if dimension in STANDARD_PROMPTS_ONLY:
        return "not available: needs VBench's own prompt suite (not supported for custom prompts)"
    if dimension not in WEIGHTS:
        return f"not available: unknown VBench dimension (known: {', '.join(sorted(WEIGHTS))})"
    cache = cache_dir or vbench_cache_dir()
    missing = missing_weights(dimension, cache)
    if missing:
        return f"not available: weights missing ({', '.join(str(cache / m) for m in missing)})"
    return None


def run_vbench(
    videos: list[VideoLike],
    dimensions: list[str] | tuple[str, ...] = DEFAULT_DIMENSIONS,
    vbench_python: str | Path | None = None,
    workdir: str | Path | None = None,
    *,
    prompts: list[str] | None = None,
    timeout_s: float = 3600.0,
    weights: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Score ``videos`` on VBench ``dimensions`` in VBench's own interpreter.

    ``videos`` are arrays or ``.npy``/``.mp4`` paths; ``prompts`` (one per video) feed the
    text-aware dimensions. Returns ``{dim: {"score": s, "videos": [s_0, s_1, ...]}}`` for computed
    dimensions (``score`` is VBench's own aggregate) and ``{dim: {"available": False, "reason": ...}}``
    for the rest. Never raises for a missing environment, missing weights or a VBench failure.
    ``weights``: a folder laid out as VBench's cache (default: VBench's own, :func:`vbench_cache_dir`);
    the model-based dimensions load their checkpoints from there and nothing is ever downloaded.
    """
    dimensions = list(dict.fromkeys(dimensions))
    python = find_vbench_python(vbench_python)
    if python is None:
        return {d: {"available": False, "reason": NO_ENV_REASON} for d in dimensions}
    results: dict[str, dict[str, Any]] = {}
    runnable = []
    cache = vbench_cache_dir(weights)
    for dim in dimensions:
        reason = dimension_status(dim, cache)
        if reason is None:
            runnable.append(dim)
        else:
            results[dim] = {"available": False, "reason": reason}
    if not runnable or not videos:
        for dim in runnable:
            results[dim] = {"available": False, "reason": "not available: no videos to score"}
        return {d: results[d] for d in dimensions}
    if prompts is not None and len(prompts) != len(videos):
        raise ValueError(f"{len(prompts)} prompts for {len(videos)} videos")

    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="sol-vbench-")) if own_tmp else Path(workdir)
    try:
        results.update(_run(python, videos, runnable, work, prompts, timeout_s, cache))
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return {d: results[d] for d in dimensions}


def _run(
    python: Path,
    videos: list[VideoLike],
    dimensions: list[str],
    work: Path,
    prompts: list[str] | None,
    timeout_s: float,
    cache: Path | None = None,
) -> dict[str, dict[str, Any]]:
    video_dir = work / "videos"
    if video_dir.exists():
        shutil.rmtree(video_dir)
    video_dir.mkdir(parents=True)
    names = []
    for i, video in enumerate(videos):
        name = f"video-{i:03d}.mp4"
        names.append(name)
        if isinstance(video, str | Path) and Path(video).suffix == ".mp4":
            shutil.copyfile(video, video_dir / name)  # score the file as the user has it
        else:
            write_mp4(load_video(video), video_dir / name, lossless=True)
    out = work / "vbench_results.json"
    out.unlink(missing_ok=True)
    cmd = [str(python), "-P", str(RUNNER), "--videos", str(video_dir), "--out", str(out)]
    cmd += ["--dimensions", ",".join(dimensions), "--workdir", str(work / "vbench_out")]
    if prompts is not None:
        prompt_file = work / "prompts.json"
        prompt_file.write_text(json.dumps(dict(zip(names, prompts, strict=True))))
        cmd += ["--prompts", str(prompt_file)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # Belt and braces: the weights were checked above; nothing in the runner may reach a hub.
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VBENCH_CACHE_DIR=str(cache or vbench_cache_dir())
    )
    log = work / "vbench_runner.log"
    try:
        with open(log, "w") as log_file:
            proc = subprocess.run(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
            )
    except subprocess.TimeoutExpired:
        return {
            d: {"available": False, "reason": f"failed: VBench ran past {timeout_s:.0f} s"}
            for d in dimensions
        }
    if proc.returncode != 0 or not out.is_file():
        tail = _last_line(log)
        reason = f"failed: vbench runner exited {proc.returncode} ({tail}); log: {log}"
        return {d: {"available": False, "reason": reason} for d in dimensions}
    raw = json.loads(out.read_text())
    results: dict[str, dict[str, Any]] = {}
    for dim in dimensions:
        entry = raw.get(dim) or {"available": False, "reason": "failed: VBench returned no result"}
        if "score" in entry:
            per_name = entry.get("videos", {})
            entry = {"score": float(entry["score"]), "videos": [per_name.get(n) for n in names]}
        results[dim] = entry
    return results


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def vbench_scores(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Only the computed dimensions of a ``run_vbench`` result: ``{dim: score}``."""
    return {d: float(r["score"]) for d, r in results.items() if "score" in r}


if __name__ == "__main__":  # python -m sol.quality.vbench VIDEO... : quick manual check
    print(json.dumps(run_vbench(sys.argv[1:]), indent=2))
