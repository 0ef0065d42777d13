"""VBench inside its own interpreter: ``python -P vbench_runner.py --videos DIR --dimensions a,b --out F``.

Run by ``sol.quality.vbench`` with the interpreter of the VBench environment
(``scripts/make_vbench_env.sh``), never imported by Sol: only the standard library, torch and vbench
are used here. It evaluates the given dimensions in VBench's ``custom_input`` mode and writes
``{dimension: {"score": float, "videos": {file name: score}} | {"available": false, "reason": str}}``
as JSON. Dimensions are evaluated one by one, so one failure does not hide the others.

``--check`` only imports vbench and prints its version (the environment's smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

# This file sits beside sol/quality/vbench.py; with the script's folder on sys.path, "import vbench"
# would import that module instead of the package. -P keeps it off; this line covers a plain run.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _define_torchvision_ops() -> None:
    """Let PyPI's (CUDA) torchvision import beside the CPU torch.

    Its ``_C`` extension links against CUDA torch libraries and fails to load, after which
    ``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
    ``torchvision::qnms`` and raises "operator torchvision::nms does not exist". Defining the two
    schemas first (with a plain-torch CPU NMS) is enough: the other ops are registered only when the
    extension loaded. VBench's custom-input dimensions never call a torchvision C++ op.
    """
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 (a working torchvision already defined it)
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

    def nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        order = scores.argsort(descending=True)
        keep = []
        x1, y1, x2, y2 = dets.unbind(1)
        areas = (x2 - x1) * (y2 - y1)
        suppressed = torch.zeros(len(dets), dtype=torch.bool)
        for i in order.tolist():
            if suppressed[i]:
                continue
            keep.append(i)
            w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
            h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
            inter = w * h
            suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
        return torch.tensor(keep, dtype=torch.long)

    lib.impl("nms", nms_cpu, "CPU")
    # Keep the library object alive for the life of the process.
    _define_torchvision_ops.lib = lib  # type: ignore[attr-defined]


def _import_vbench():
    _define_torchvision_ops()
    import vbench
    from vbench import VBench

    return vbench, VBench


def _evaluate(videos: Path, dimensions: list[str], workdir: Path, device: str, prompts: dict) -> dict:
    vbench, VBench = _import_vbench()
    full_info = Path(vbench.__file__).parent / "VBench_full_info.json"
    results: dict[str, dict] = {}
    for dim in dimensions:
        out_dir = workdir / dim
        try:
            bench = VBench(device, str(full_info), str(out_dir))
            # local=True: model-based dimensions load weights from VBENCH_CACHE_DIR (the caller checked
            # they are there) instead of fetching from torch.hub.
            bench.evaluate(
                videos_path=str(videos),
                name="sol",
                dimension_list=[dim],
                # {file name: prompt}; empty → VBench reads the prompt from the file name.
                prompt_list=prompts,
                local=True,
                mode="custom_input",
            )
            raw = json.loads((out_dir / "sol_eval_results.json").read_text())[dim]
            score, per_video = raw[0], raw[1]
            results[dim] = {
                "score": float(score),
                "videos": {Path(v["video_path"]).name: float(v["video_results"]) for v in per_video},
            }
        except Exception as err:  # report the failure, go on with the other dimensions
            traceback.print_exc()
            first = (str(err).strip().splitlines() or [""])[0][:200]
            reason = f"failed: {type(err).__name__}: {first}"
            if "weights_only" in str(err):
                # torch >= 2.6 loads checkpoints weights-only; some of VBench 0.1.5's are full pickles.
                reason += " (if you trust your VBench cache, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1)"
            results[dim] = {"available": False, "reason": reason}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="import vbench, print its version, exit")
    parser.add_argument("--videos", type=Path, help="folder of .mp4 files")
    parser.add_argument("--dimensions", default="temporal_flickering", help="comma-separated")
    parser.add_argument("--out", type=Path, help="JSON results file to write")
    parser.add_argument("--prompts", type=Path, help="JSON {video file name: prompt}")
    parser.add_argument("--workdir", type=Path, help="VBench's own output folder (default: beside --out)")
    parser.add_argument("--device", default=os.environ.get("SOL_VBENCH_DEVICE", "cpu"))
    args = parser.parse_args(argv)

    if args.check:
        vbench, _ = _import_vbench()
        import torch

        print(f"vbench ok: torch {torch.__version__}, vbench at {Path(vbench.__file__).parent}")
        return 0
    if args.videos is None or args.out is None:
        parser.error("--videos and --out are required")
    dims = [d.strip() for d in args.dimensions.split(",") if d.strip()]
    workdir = args.workdir or args.out.parent / "vbench_work"
    prompts = json.loads(args.prompts.read_text()) if args.prompts else {}
    results = _evaluate(args.videos, dims, workdir, args.device, prompts)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
