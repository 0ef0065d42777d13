"""Video files: mp4 (imageio-ffmpeg) and PNG frame strips. Needs the ``optimize`` extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8(video: np.ndarray) -> np.ndarray:
    """``[F, H, W, 3]`` floats in [0, 1] → uint8 (NaN becomes 0)."""
    return (np.nan_to_num(np.clip(video, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(video: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """Write an mp4 that browsers play (H.264, yuv420p; sides padded to even by the encoder)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(video)
    with imageio.get_writer(
        path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=16, quality=8,
        ffmpeg_log_level="error",
    ) as w:  # fmt: skip
        for f in frames:
            w.append_data(f)
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), format="FFMPEG") as r:
        return np.stack([f for f in r])  # list(r) asks len() = inf for ffmpeg streams


def frame_strip(video: np.ndarray, path: str | Path, max_frames: int = 8, scale: int = 2) -> Path:
    """A PNG of up to ``max_frames`` evenly spaced frames side by side."""
    from PIL import Image

    frames = to_uint8(video)
    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    img = Image.fromarray(strip)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
