"""Small deterministic videos in Sol's convention (float32 [F, H, W, 3] in [0, 1])."""

from __future__ import annotations

import numpy as np
import pytest


def moving_square(frames: int = 9, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    """A coloured square sliding over a textured gradient: motion, colour, detail, no flat frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([x / width, y / height, 0.5 + 0.2 * np.sin(x / 3.0)], axis=-1)
    background += rng.normal(0, 0.02, background.shape).astype(np.float32)
    video = np.repeat(background[None], frames, axis=0)
    side = height // 3
    for f in range(frames):
        x0 = 2 + f * (width - side - 4) // max(frames - 1, 1)
        video[f, side : 2 * side, x0 : x0 + side] = (0.9, 0.2, 0.1)
    return np.clip(video, 0.0, 1.0).astype(np.float32)


@pytest.fixture
def videos() -> list[np.ndarray]:
    """Two baseline videos, as one workload of two prompts would give."""
    return [moving_square(seed=0), moving_square(frames=9, seed=1)[:, ::-1].copy()]
