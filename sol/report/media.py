"""Videos for the report: small H.264 mp4s embedded as base64 data URIs.

Each video is shrunk to at most ``MAX_SIDE`` pixels on its long side and ``MAX_FRAMES`` frames so
that a report with a few candidates stays a few MB and opens offline in any browser.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import numpy as np
import torch

from sol.quality.video import load_video, write_mp4

MAX_SIDE = 256
MAX_FRAMES = 81
# The difference video shows |candidate - baseline| times this: 1/255 becomes ~8/255, visible on a
# dark background; anything over 1/8 of full scale saturates.
DIFF_GAIN = 8.0


def shrink(video: np.ndarray, max_side: int = MAX_SIDE, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Area-downscale ``[F, H, W, 3]`` so the long side is ≤ ``max_side``; keep ≤ ``max_frames``."""
    if len(video) > max_frames:
        video = video[np.linspace(0, len(video) - 1, max_frames).round().astype(int)]
    height, width = video.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1:
        return video
    size = (max(2, round(height * scale)), max(2, round(width * scale)))
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)
    small = torch.nn.functional.interpolate(frames, size=size, mode="area")
    return small.permute(0, 2, 3, 1).numpy()


def diff_video(base: np.ndarray, cand: np.ndarray, gain: float = DIFF_GAIN) -> np.ndarray:
    """``|cand - base| * gain`` clipped to [0, 1]; NaN shows as full white (it is the worst error)."""
    diff = np.abs(cand.astype(np.float32) - base.astype(np.float32)) * gain
    return np.clip(np.nan_to_num(diff, nan=1.0, posinf=1.0), 0.0, 1.0)


def mp4_data_uri(video: np.ndarray, fps: int = 8) -> str:
    """A small browser-playable mp4 (H.264, yuv420p, faststart) as a ``data:video/mp4`` URI."""
    with tempfile.TemporaryDirectory(prefix="sol-report-") as tmp:
        path = write_mp4(shrink(video), Path(tmp) / "v.mp4", lossless=False, fps=fps)
        data = path.read_bytes()
    return "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")


def try_load(path_or_array) -> tuple[np.ndarray | None, str | None]:
    """(video, None) or (None, why it could not be read): the report shows the reason instead."""
    if path_or_array is None:
        return None, "no video recorded"
    try:
        return load_video(path_or_array), None
    except Exception as err:  # a broken file must not stop the report
        return None, f"{type(err).__name__}: {err}".splitlines()[0]
