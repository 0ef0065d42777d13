"""Fidelity of an accelerated pipeline's videos to the baseline's, and sanity of one video.

All functions take videos in Sol's convention (float32 ``[F, H, W, 3]`` in [0, 1], see
``sol.quality.video``); ``.npy``/``.mp4`` paths are accepted where a list of videos is taken.

>>> import numpy as np
>>> v = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
>>> psnr(v, v)
inf
>>> round(ssim(v, v), 6)
1.0

PSNR of identical videos is ``float("inf")`` in Python; ``json_safe`` writes it as the string
``"inf"`` (``float("inf")`` reads it back) because JSON has no infinity and a large finite number
would pass for a measurement.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from sol.errors import SolError
from sol.quality.video import VideoLike, check_video, load_video, to_uint8

# SSIM over this many frames at a time: torchmetrics keeps ~10 float copies of its input, so a
# whole 81x480x832 video at once would need ~4 GB; 8 frames need ~400 MB.
_SSIM_CHUNK = 8

# "black": at most this share of pixels brighter than 8/255 (near-constant dark; a single hot pixel
# or a timestamp does not make a black video look alive).
_BLACK_LEVEL = 8.0 / 255.0
_BLACK_SHARE = 1e-3
# "frozen": no frame differs from the first by half a uint8 step anywhere (identical once quantized).
_FROZEN_ATOL = 0.5 / 255.0
# Below this many elements per tensor, metrics run on one thread (see _few_threads).
_SMALL_NUMEL = 1 << 22


def _pair(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, cand = check_video(ref, "reference video"), check_video(cand, "candidate video")
    if ref.shape != cand.shape:
        raise SolError(f"video shapes differ: reference {tuple(ref.shape)} vs candidate {tuple(cand.shape)}")
    return ref, cand


def mse(ref: np.ndarray, cand: np.ndarray) -> float:
    """Mean squared error over every pixel of every frame (float64 accumulation)."""
    ref, cand = _pair(ref, cand)
    diff = ref.astype(np.float64) - cand.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr_from_mse(value: float) -> float:
    """PSNR in dB for data range 1; ``inf`` when the MSE is 0."""
    if value == 0.0:
        return math.inf
    if not math.isfinite(value):
        return math.nan
    return 10.0 * math.log10(1.0 / value)


def psnr(ref: np.ndarray, cand: np.ndarray) -> float:
    """PSNR (dB, data range 1) of ``cand`` against ``ref`` over the whole video; ``inf`` if identical.

    Computed by torchmetrics in float64 over all frames at once (the video's MSE, not a mean of
    per-frame PSNRs, so that one identical frame does not make the mean infinite).

    >>> import numpy as np
    >>> round(psnr(np.zeros((2, 4, 4, 3)), np.full((2, 4, 4, 3), 0.1)), 3)
    20.0
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ref, cand = _pair(ref, cand)
    if np.array_equal(ref, cand):
        return math.inf
    with _few_threads(ref.size):
        value = peak_signal_noise_ratio(
            torch.from_numpy(cand.astype(np.float64)),
            torch.from_numpy(ref.astype(np.float64)),
            data_range=1.0,
        )
    return float(value)


def _metric_device() -> torch.device:
    # SSIM's depthwise 11x11 convolutions cost ~0.3 s per 480x832 frame on a 2-core CPU (~25 s for
    # an 81-frame video); a GPU, where there is one, does it in milliseconds.
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextmanager
def _few_threads(numel: int) -> Iterator[None]:
    """One intra-op thread for small metric tensors.

    On a 2-core machine that is busy elsewhere, OpenMP's barrier makes each small op wait for the
    other core: SSIM of a 9x32x48 video took 670 ms with 2 threads and 9 ms with 1 (measured under
    load). Big inputs keep the caller's setting; the setting is restored on exit.
    """
    before = torch.get_num_threads()
    small = numel < _SMALL_NUMEL and before > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _frames(video: np.ndarray, device: torch.device) -> torch.Tensor:
    """[F, H, W, 3] numpy → contiguous [F, 3, H, W] tensor (channels-last input makes conv2d ~4x slower)."""
    return torch.from_numpy(np.ascontiguousarray(video)).to(device).permute(0, 3, 1, 2).contiguous()


def ssim(ref: np.ndarray, cand: np.ndarray) -> float:
    """Mean SSIM over frames (torchmetrics, Gaussian window 11 / sigma 1.5, data range 1).

    Frames smaller than 11 pixels use the largest odd window that fits.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    ref, cand = _pair(ref, cand)
    if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
        return math.nan
    side = min(ref.shape[1], ref.shape[2])
    kernel = min(11, side if side % 2 else side - 1)
    if kernel < 3:
        raise SolError(f"frames of {ref.shape[1]}x{ref.shape[2]} are too small for SSIM (need 3x3)")
    sigma = 1.5 * kernel / 11
    device = _metric_device()
    total, count = 0.0, 0
    with _few_threads(ref[:_SSIM_CHUNK].size):
        for start in range(0, ref.shape[0], _SSIM_CHUNK):
            r = _frames(ref[start : start + _SSIM_CHUNK], device)
            c = _frames(cand[start : start + _SSIM_CHUNK], device)
            per_frame = structural_similarity_index_measure(
                c, r, data_range=1.0, kernel_size=kernel, sigma=sigma, reduction="none"
            )
            total += float(per_frame.double().sum())
            count += per_frame.numel()
    return total / count


# --- LPIPS: only where the package and its backbone weights are already on this machine -------------

# torchvision's file names for the backbones lpips loads (it fetches them through torch.hub).
_LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def lpips_status(net: str = "alex") -> str | None:
    """``None`` when LPIPS can run offline, else the reason it cannot (never downloads)."""
    if importlib.util.find_spec("lpips") is None:
        return "not available: the lpips package is not installed"
    if importlib.util.find_spec("torchvision") is None:
        return "not available: lpips needs torchvision, which is not installed"
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]
    if not checkpoint.is_file():
        return f"not available: LPIPS backbone weights missing ({checkpoint}); they are never downloaded"
    try:
        _lpips_model(net)
    except Exception as err:  # a broken torchvision/lpips install must not crash a run
        return f"not available: lpips failed to load ({type(err).__name__}: {err})".splitlines()[0]
    return None


@lru_cache(maxsize=2)
def _lpips_model(net: str) -> torch.nn.Module:
    import lpips as lpips_pkg

    model = lpips_pkg.LPIPS(net=net, verbose=False)
    return model.eval()


def lpips(ref: np.ndarray, cand: np.ndarray, net: str = "alex") -> tuple[float | None, str | None]:
    """Mean LPIPS over frames, as ``(value, None)``, or ``(None, reason)`` when it cannot run here.

    >>> value, reason = lpips(np.zeros((2, 16, 16, 3)), np.zeros((2, 16, 16, 3)))
    >>> value is None or reason is None
    True
    """
    reason = lpips_status(net)
    if reason is not None:
        return None, reason
    ref, cand = _pair(ref, cand)
    model = _lpips_model(net)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ref.shape[0], _SSIM_CHUNK):
            r = _frames(ref[start : start + _SSIM_CHUNK], torch.device("cpu"))
            c = _frames(cand[start : start + _SSIM_CHUNK], torch.device("cpu"))
            d = model(r * 2 - 1, c * 2 - 1)  # lpips takes [-1, 1]
            total += float(d.double().sum())
            count += d.shape[0]
    return total / count, None


# --- no-reference checks ------------------------------------------------------------------------


def temporal_flickering(video: np.ndarray) -> float:
    """VBench's temporal_flickering score of one video, in [0, 1] (1 = no change between frames).

    The formula of ``vbench/temporal_flickering.py`` (0.1.5): frames as uint8, the mean absolute
    difference of each pair of consecutive frames, then ``(255 - mean of those) / 255``. VBench
    reads the frames back from an mp4 with OpenCV; Sol writes VBench's mp4s losslessly, so the
    two agree to float rounding. A single-frame video scores 1.0 (VBench would give NaN).
    """
    frames = to_uint8(np.asarray(video))
    if frames.ndim != 4:
        raise SolError(f"video has shape {tuple(frames.shape)}; expected [frames, height, width, 3]")
    if frames.shape[0] < 2:
        return 1.0
    f = frames.astype(np.float32)
    maes = [float(np.mean(np.abs(f[i] - f[i + 1]), dtype=np.float64)) for i in range(len(f) - 1)]
    return (255.0 - float(np.mean(maes))) / 255.0


class Sanity(BaseModel):
    """What is wrong with a video on its own, without a reference."""

    model_config = ConfigDict(frozen=True)

    finite: bool
    black: bool
    frozen: bool

    @property
    def problems(self) -> list[str]:
        out = []
        if not self.finite:
            out.append("contains NaN or Inf")
        if self.black:
            out.append("is black (near-constant dark)")
        if self.frozen:
            out.append("is frozen (all frames equal)")
        return out

    @property
    def ok(self) -> bool:
        return self.finite and not self.black and not self.frozen


def video_sanity(video: np.ndarray) -> Sanity:
    """NaN/Inf, black (≥ 99.9% of pixels darker than 8/255), frozen (all frames equal once quantized).

    >>> import numpy as np
    >>> video_sanity(np.zeros((3, 8, 8, 3), np.float32)).problems
    ['is black (near-constant dark)', 'is frozen (all frames equal)']
    """
    video = check_video(video)
    finite = bool(np.isfinite(video).all())
    clean = np.nan_to_num(video, nan=0.0, posinf=1.0, neginf=0.0)
    black = bool(np.mean(clean > _BLACK_LEVEL) < _BLACK_SHARE)
    frozen = bool(clean.shape[0] > 1 and np.all(np.abs(clean - clean[:1]) < _FROZEN_ATOL))
    return Sanity(finite=finite, black=black, frozen=frozen)


# --- a workload's worth -------------------------------------------------------------------------


def fidelity(
    ref_videos: list[VideoLike], cand_videos: list[VideoLike], *, with_lpips: bool = True
) -> dict[str, Any]:
    """Fidelity of each candidate video to its reference, and the workload means.

    Returns ``{"psnr", "ssim", "lpips", "flicker", "flicker_ref", "psnr_min", "ssim_min",
    "lpips_reason", "videos": [{"psnr", "ssim", "lpips", "flicker", "flicker_ref", "mse"}, ...]}``.
    ``psnr`` (the mean) is the PSNR of the mean MSE over all videos — the whole workload as one
    signal — so one identical video does not make it infinite; ``psnr_min`` is the worst video.
    ``lpips`` is None when it cannot run here and ``lpips_reason`` says why.

    >>> import numpy as np
    >>> v = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    >>> fidelity([v], [v])["psnr"]
    inf
    """
    if len(ref_videos) != len(cand_videos):
        raise SolError(f"{len(cand_videos)} candidate videos for {len(ref_videos)} reference videos")
    per_video = []
    lpips_reason = lpips_status() if with_lpips else "not requested"
    for ref_like, cand_like in zip(ref_videos, cand_videos, strict=True):
        ref, cand = _pair(load_video(ref_like), load_video(cand_like))
        value_mse = mse(ref, cand)
        lp = lpips(ref, cand)[0] if lpips_reason is None else None
        per_video.append(
            {
                "mse": value_mse,
                "psnr": psnr(ref, cand),
                "ssim": ssim(ref, cand),
                "lpips": lp,
                "flicker": temporal_flickering(cand),
                "flicker_ref": temporal_flickering(ref),
            }
        )
    if not per_video:
        raise SolError("no videos to compare")
    lp_values = [v["lpips"] for v in per_video if v["lpips"] is not None]
    return {
        "psnr": psnr_from_mse(float(np.mean([v["mse"] for v in per_video]))),
        "psnr_min": min(v["psnr"] for v in per_video),
        "ssim": float(np.mean([v["ssim"] for v in per_video])),
        "ssim_min": min(v["ssim"] for v in per_video),
        "lpips": float(np.mean(lp_values)) if lp_values and len(lp_values) == len(per_video) else None,
        "lpips_reason": lpips_reason,
        "flicker": float(np.mean([v["flicker"] for v in per_video])),
        "flicker_ref": float(np.mean([v["flicker_ref"] for v in per_video])),
        "videos": per_video,
    }


def json_safe(obj: Any) -> Any:
    """Copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    ``inf``/``-inf``/``nan`` become the strings ``"inf"``/``"-inf"``/``"nan"`` (``float()`` reads
    them back); numpy scalars and arrays become Python numbers and lists; paths become strings.

    >>> json_safe({"psnr": float("inf"), "v": [np.float32(0.5)]})
    {'psnr': 'inf', 'v': [0.5]}
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, BaseModel):
        return json_safe(obj.model_dump())
    return obj


def as_float(value: Any) -> float | None:
    """Inverse of ``json_safe`` for one number: ``"inf"`` → ``inf``; None stays None."""
    if value is None:
        return None
    return float(value)
