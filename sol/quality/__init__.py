"""Quality: fidelity to the baseline, VBench dimensions (in VBench's own environment), the gate.

>>> from sol.quality import gate, fidelity, run_vbench, BUDGETS
>>> sorted(BUDGETS)
['aggressive', 'balanced', 'lossless', 'near-lossless']

Measurement layer: imports torch, numpy, torchmetrics, imageio-ffmpeg, pydantic; never the agent,
Ray, LangGraph or the CLI. VBench itself is never imported here (see ``sol.quality.vbench``).
"""

from sol.quality.gate import BUDGETS, DEFAULT_BUDGET, Check, QualityBudget, Verdict, gate, get_budget
from sol.quality.metrics import (
    Sanity,
    fidelity,
    json_safe,
    lpips,
    lpips_status,
    psnr,
    ssim,
    temporal_flickering,
    video_sanity,
)
from sol.quality.vbench import dimension_status, find_vbench_python, run_vbench, vbench_scores
from sol.quality.video import load_video, read_mp4, to_uint8, write_mp4

__all__ = [
    "BUDGETS",
    "DEFAULT_BUDGET",
    "Check",
    "QualityBudget",
    "Sanity",
    "Verdict",
    "dimension_status",
    "fidelity",
    "find_vbench_python",
    "gate",
    "get_budget",
    "json_safe",
    "load_video",
    "lpips",
    "lpips_status",
    "psnr",
    "read_mp4",
    "run_vbench",
    "ssim",
    "temporal_flickering",
    "to_uint8",
    "vbench_scores",
    "video_sanity",
    "write_mp4",
]
