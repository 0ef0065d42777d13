"""Video arrays and files: the one convention Sol's CLI, metrics, VBench adapter and report share.

A video is a float32 numpy array ``[F, H, W, 3]`` in ``[0, 1]`` — what
``WanPipeline(..., output_type="np").frames[0]`` returns. On disk a video is ``.npy`` (exact) or
``.mp4`` (for VBench and for people).

Runtime layer: ``sol apply`` and ``sol generate`` write their .mp4 with it on a no-extras install
(``imageio-ffmpeg`` is a base dependency; Pillow comes with diffusers). The measurement layer
re-exports it as ``sol.quality.video``.

>>> import numpy as np
>>> v = np.zeros((5, 16, 16, 3), np.float32)
>>> to_uint8(v).dtype
dtype('uint8')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sol.errors import SolError

VideoLike = np.ndarray | str | Path


def to_uint8(video: np.ndarray) -> np.ndarray:
    """``[F, H, W, 3]`` float in [0, 1] → uint8 by rounding (as diffusers' ``numpy_to_pil``).

    uint8 input is returned unchanged. NaN becomes 0 so that writing a broken video still works
    (the gate reports the NaN from the float array, not from the file).
    """
    video = np.asarray(video)
    if video.dtype == np.uint8:
        return video
    v = np.nan_to_num(video.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def check_video(video: np.ndarray, what: str = "video") -> np.ndarray:
    """Return ``video`` as a float32 ``[F, H, W, 3]`` array or raise a one-line SolError."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise SolError(f"{what} has shape {tuple(video.shape)}; expected [frames, height, width, 3]")
    if video.dtype == np.uint8:
        return video.astype(np.float32) / 255.0
    return video.astype(np.float32, copy=False)


def require_ffmpeg():
    """The ``imageio_ffmpeg`` module, or a one-line SolError saying how to install it.

    A base dependency; a trimmed environment still gets one line instead of a traceback, and the
    CLI checks before it spends minutes generating a video it could not write.

    >>> require_ffmpeg().__name__
    'imageio_ffmpeg'
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise SolError(
            ".mp4 files are written and read with imageio-ffmpeg, which is not installed: "
            "pip install imageio-ffmpeg"
        ) from None
    return imageio_ffmpeg


def write_mp4(video: np.ndarray, path: str | Path, *, lossless: bool = False, fps: int = 8) -> Path:
    """Write ``video`` (float [0, 1] or uint8) as H.264 mp4 with the ffmpeg bundled in imageio-ffmpeg.

    ``lossless=True`` uses libx264rgb at CRF 0: decoding gives back exactly ``to_uint8(video)``
    (checked with both imageio-ffmpeg and OpenCV), which is what VBench must see so that its scores
    measure the model, not the codec. ``lossless=False`` writes yuv420p for browsers (small, lossy).

    >>> write_mp4(np.zeros((5, 16, 16, 3), np.float32), "/tmp/black.mp4")  # doctest: +SKIP
    PosixPath('/tmp/black.mp4')
    """
    imageio_ffmpeg = require_ffmpeg()
    frames = to_uint8(video)
    check_video(frames[:1], str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    if lossless:
        codec, pix_fmt, params = "libx264rgb", "rgb24", ["-crf", "0", "-preset", "ultrafast"]
    else:
        if height % 2 or width % 2:  # yuv420p needs even sizes: pad by edge replication
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            height, width = frames.shape[1:3]
        codec, pix_fmt, params = "libx264", "yuv420p", ["-crf", "20", "-movflags", "+faststart"]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec=codec,
        pix_fmt_in="rgb24",
        pix_fmt_out=pix_fmt,
        output_params=params,
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode an mp4 to a uint8 ``[F, H, W, 3]`` RGB array."""
    reader = require_ffmpeg().read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    if not frames:
        raise SolError(f"{path} has no decodable frames")
    return np.stack(frames)


def load_video(video: VideoLike) -> np.ndarray:
    """An array, an ``.npy`` or an ``.mp4`` → float32 ``[F, H, W, 3]`` in [0, 1]."""
    if isinstance(video, np.ndarray):
        return check_video(video)
    path = Path(video)
    if not path.exists():
        raise SolError(f"video file {path} does not exist")
    if path.suffix == ".npy":
        return check_video(np.load(path, allow_pickle=False), str(path))
    if path.suffix in (".mp4", ".webm", ".mkv", ".mov", ".gif"):
        return check_video(read_mp4(path), str(path))
    raise SolError(f"{path}: unknown video format (use .npy or .mp4)")


def frame_strip(video: np.ndarray, path: str | Path, max_frames: int = 8, scale: int = 2) -> Path:
    """A PNG of up to ``max_frames`` evenly spaced frames side by side."""
    from PIL import Image  # a dependency of diffusers

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
