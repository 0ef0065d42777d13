"""Procedural videos for the reference model `sol-tiny-wan`, and the check that a video follows its prompt.

One object (a shape in one colour) moves over a dark background, plain or textured; the caption says
what it is and how it moves: ``"a red circle moving left"``. Everything is generated on the fly from
a seed, so the data set needs no download and is reproducible.

Example:
    >>> from sol.models.reference_data import sample_clip, check_video
    >>> clip = sample_clip(seed=0)            # float32 [17, 64, 64, 3] in [0, 1] + its caption
    >>> check_video(clip.video, clip.caption).passed
    True

Some exact (colour, shape, motion) combinations are held out of training (`HELD_OUT`) so a test can
ask whether the model composes words it saw only apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Colours are saturated and bright; backgrounds stay dark (max channel <= BG_MAX), so an object is
# found in any video as "the bright pixels" without knowing the background.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.10, 0.85, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.88, 0.10),
    "white": (0.95, 0.95, 0.95),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "bouncing", "growing")
BACKGROUNDS: tuple[str, ...] = ("plain", "checker", "stripes", "gradient", "noise")
BG_MAX = 0.30
OBJECT_THRESHOLD = 0.45  # max channel above this = object pixel (backgrounds stay below BG_MAX)

# Held out of training: each colour, shape and motion still appears in other combinations.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("green", "square", "moving left"),
        ("blue", "triangle", "moving up"),
        ("yellow", "circle", "moving down"),
        ("white", "diamond", "moving right"),
        ("red", "triangle", "bouncing"),
        ("blue", "circle", "growing"),
        ("yellow", "square", "moving right"),
        ("white", "circle", "moving up"),
        ("red", "diamond", "moving down"),
        ("green", "triangle", "moving right"),
    }
)

ALL_COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS
)
TRAIN_COMBOS: tuple[tuple[str, str, str], ...] = tuple(x for x in ALL_COMBOS if x not in HELD_OUT)


def caption_for(colour: str, shape: str, motion: str) -> str:
    """The caption of one combination: ``caption_for("red", "circle", "moving left")``."""
    return f"a {colour} {shape} {motion}"


def parse_caption(caption: str) -> tuple[str, str, str]:
    """Inverse of `caption_for`; raises ValueError on anything else."""
    words = caption.strip().lower().split()
    if len(words) < 3 or words[0] != "a" or words[1] not in COLOURS or words[2] not in SHAPES:
        raise ValueError(f"not a reference caption: {caption!r}")
    motion = " ".join(words[3:])
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion in {caption!r}")
    return words[1], words[2], motion


def vocabulary() -> list[str]:
    """Every word any caption uses, in a fixed order (the tokenizer's vocabulary after specials)."""
    words: list[str] = ["a"]
    for w in [*COLOURS, *SHAPES, *(w for m in MOTIONS for w in m.split())]:
        if w not in words:
            words.append(w)
    return words


@dataclass
class Clip:
    video: np.ndarray  # float32 [T, H, W, 3] in [0, 1]
    caption: str
    mask: np.ndarray  # float32 [T, H, W], 1 on the object
    meta: dict = field(default_factory=dict)


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Anti-aliased (1 px ramp) mask of one shape of 'radius' r centred at (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        d = np.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        d = np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    elif shape == "diamond":
        d = (np.abs(dx) + np.abs(dy)) / math.sqrt(2.0) - 0.8 * r
    elif shape == "triangle":
        # Apex-up equilateral triangle, circumradius s, y grows downward: three edge half-planes.
        s = 1.3 * r
        h3 = math.sqrt(3) / 2
        d = np.maximum(np.maximum(dy, h3 * dx - 0.5 * dy), -h3 * dx - 0.5 * dy) - 0.5 * s
    else:
        raise ValueError(shape)
    return np.clip(0.5 - d, 0.0, 1.0)


def _background(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(0.0, 0.16, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "plain":
        bg = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == "checker":
        cell = int(rng.integers(8, 17))
        other = rng.uniform(0.0, 0.16, size=3)
        m = ((yy // cell + xx // cell) % 2)[..., None]
        bg = base * (1 - m) + other * m
    elif kind == "stripes":
        period = rng.uniform(10, 24)
        ang = rng.uniform(0, math.pi)
        other = rng.uniform(0.0, 0.16, size=3)
        m = (0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(ang) + yy * math.sin(ang)) / period))[..., None]
        bg = base * (1 - m) + other * m
    elif kind == "gradient":
        other = rng.uniform(0.0, 0.22, size=3)
        ang = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
        bg = base * (1 - t) + other * t
    elif kind == "noise":
        # Low-frequency noise: an 8x8 random grid upsampled bilinearly.
        g = rng.uniform(0.0, 0.08, size=(5, 5, 3))
        ys = np.linspace(0, 4, h)
        xs = np.linspace(0, 4, w)
        y0 = np.clip(np.floor(ys).astype(int), 0, 3)
        x0 = np.clip(np.floor(xs).astype(int), 0, 3)
        fy = (ys - y0)[:, None, None]
        fx = (xs - x0)[None, :, None]
        a = g[y0][:, x0]
        b = g[y0][:, x0 + 1]
        c = g[y0 + 1][:, x0]
        d = g[y0 + 1][:, x0 + 1]
        bg = base + (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    else:
        raise ValueError(kind)
    return np.clip(bg, 0.0, BG_MAX).astype(np.float32)


def _trajectory(motion: str, rng: np.random.Generator, t: np.ndarray, h: int, w: int):
    """Centre (cy, cx) and radius per frame, t in [0, 1]. Objects stay inside the frame."""
    r0 = rng.uniform(0.11, 0.16) * min(h, w)
    margin = r0 + 2
    if motion in ("moving left", "moving right", "moving up", "moving down"):
        span_max = (w if motion in ("moving left", "moving right") else h) - 2 * margin
        dist = rng.uniform(0.45, 0.85) * span_max
        start = rng.uniform(margin, margin + span_max - dist)
        along = start + dist * t
        if motion in ("moving left", "moving up"):
            along = along[::-1].copy()
        other = rng.uniform(margin, (h if motion in ("moving left", "moving right") else w) - margin)
        across = np.full_like(t, other)
        if motion in ("moving left", "moving right"):
            cy, cx = across, along
        else:
            cy, cx = along, across
        r = np.full_like(t, r0)
    elif motion == "bouncing":
        # Falls to a floor and rebounds: |cos| arcs, 1.5-2.5 bounces per clip.
        floor = h - margin
        height = rng.uniform(0.4, 0.6) * h
        n = rng.uniform(1.5, 2.5)
        phase = rng.uniform(0, 0.3)
        cy = floor - height * np.abs(np.cos(math.pi * (n * t + phase)))
        cx = np.full_like(t, rng.uniform(margin, w - margin))
        r = np.full_like(t, r0)
    elif motion == "growing":
        r_start = rng.uniform(0.05, 0.08) * min(h, w)
        r_end = rng.uniform(0.20, 0.26) * min(h, w)
        r = r_start + (r_end - r_start) * t
        m = r_end + 2
        cy = np.full_like(t, rng.uniform(m, h - m))
        cx = np.full_like(t, rng.uniform(m, w - m))
    else:
        raise ValueError(motion)
    return cy, cx, r


def render(
    colour: str,
    shape: str,
    motion: str,
    seed: int,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    background: str | None = None,
) -> Clip:
    """Render one clip of a given combination; the seed picks background, size, speed and place."""
    rng = np.random.default_rng(seed)
    bg_kind = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg = _background(bg_kind, rng, height, width)
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    cy, cx, r = _trajectory(motion, rng, t, height, width)
    # Colour jitter keeps the model from memorising one RGB value per word.
    rgb = np.clip(np.asarray(COLOURS[colour]) + rng.uniform(-0.05, 0.05, size=3), 0.0, 1.0).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    video = np.empty((frames, height, width, 3), np.float32)
    mask = np.empty((frames, height, width), np.float32)
    for i in range(frames):
        m = _shape_mask(shape, yy, xx, float(cy[i]), float(cx[i]), float(r[i]))
        mask[i] = m
        video[i] = bg * (1 - m[..., None]) + rgb * m[..., None]
    meta = {"colour": colour, "shape": shape, "motion": motion, "background": bg_kind, "seed": seed}
    return Clip(video=video, caption=caption_for(colour, shape, motion), mask=mask, meta=meta)


def sample_clip(
    seed: int, frames: int = 17, height: int = 64, width: int = 64, held_out: bool = False
) -> Clip:
    """A random clip from the training combinations (or from `HELD_OUT` with held_out=True).

    Colours are drawn uniformly first, then shape and motion, so every colour gets the same share.
    """
    rng = np.random.default_rng([seed, 7])
    pool = sorted(HELD_OUT) if held_out else TRAIN_COMBOS
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    options = [x for x in pool if x[0] == colour] or list(pool)
    c, s, m = options[int(rng.integers(len(options)))]
    return render(c, s, m, seed=int(rng.integers(2**31)), frames=frames, height=height, width=width)


# ---------------------------------------------------------------------------------------------
# The prompt-following check
# ---------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    passed: bool
    colour_ok: bool
    motion_ok: bool
    colour: str | None  # dominant colour found
    detail: dict


def _nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    ref = np.asarray([COLOURS[n] for n in names], np.float32)
    return names[int(np.argmin(((ref - rgb[None]) ** 2).sum(-1)))]


def check_video(video: np.ndarray, caption: str, min_pixels: int = 6) -> CheckResult:
    """Does `video` ([T, H, W, 3] in [0, 1]) show what `caption` says?

    Object pixels are those whose brightest channel exceeds OBJECT_THRESHOLD. The colour check votes
    each object pixel to its nearest palette colour; the motion check follows the object's centroid
    (left/right/up/down: net displacement of at least 12% of the frame along the axis, larger than
    across it), its vertical path (bouncing: goes down and back up by 10%+ of the frame at least once)
    or its area (growing: the last third at least 1.6x the first third). The first frame is skipped
    (a causal VAE makes it the hardest one); frames with fewer than `min_pixels` object pixels are
    ignored, and a video with fewer than half its frames visible fails.

    >>> check_video(render("red", "circle", "moving left", seed=1).video, "a red circle moving left").passed
    True
    """
    colour, _shape, motion = parse_caption(caption)
    v = np.asarray(video, np.float32)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3], got {v.shape}")
    v = v[1:]
    t_len, h, w, _ = v.shape
    obj = v.max(-1) > OBJECT_THRESHOLD
    counts = obj.reshape(t_len, -1).sum(-1)
    visible = counts >= min_pixels
    detail: dict = {"visible_frames": int(visible.sum()), "frames": int(t_len)}
    if visible.sum() < max(2, t_len // 2):
        return CheckResult(False, False, False, None, detail)

    # Colour: per-pixel vote.
    px = v[obj]
    names = list(COLOURS)
    ref = np.asarray([COLOURS[n] for n in names], np.float32)
    votes = np.argmin(((px[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)
    hist = np.bincount(votes, minlength=len(names))
    found = names[int(hist.argmax())]
    detail["colour_votes"] = dict(zip(names, hist.tolist(), strict=True))
    colour_ok = found == colour

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    idx = np.nonzero(visible)[0]
    cy = np.array([(yy * obj[i]).sum() / counts[i] for i in idx])
    cx = np.array([(xx * obj[i]).sum() / counts[i] for i in idx])
    area = counts[idx].astype(np.float32)
    k = max(1, len(idx) // 3)
    dy = float(cy[-k:].mean() - cy[:k].mean())
    dx = float(cx[-k:].mean() - cx[:k].mean())
    detail.update(
        dx=round(dx, 2), dy=round(dy, 2), area_ratio=round(float(area[-k:].mean() / area[:k].mean()), 2)
    )
    if motion in ("moving left", "moving right"):
        sign = -1 if motion == "moving left" else 1
        motion_ok = sign * dx >= 0.12 * w and abs(dx) > abs(dy)
    elif motion in ("moving up", "moving down"):
        sign = -1 if motion == "moving up" else 1
        motion_ok = sign * dy >= 0.12 * h and abs(dy) > abs(dx)
    elif motion == "bouncing":
        # A bounce: some frame j (the floor) lies >= 10% of h below an earlier frame and below a later one.
        thr = 0.10 * h
        down_then_up = any(
            cy[j] - cy[: j + 1].min() >= thr and cy[j] - cy[j:].min() >= thr for j in range(len(cy))
        )
        motion_ok = down_then_up and abs(dx) < 0.2 * w
    elif motion == "growing":
        motion_ok = detail["area_ratio"] >= 1.6
    else:  # pragma: no cover - parse_caption guards this
        motion_ok = False
    return CheckResult(bool(colour_ok and motion_ok), bool(colour_ok), bool(motion_ok), found, detail)


# ---------------------------------------------------------------------------------------------
# How the shipped model is meant to be called
# ---------------------------------------------------------------------------------------------

# The native call of `sol-tiny-wan` (docs/reference-model.md). max_sequence_length must be 8: the
# model was trained with prompts padded to 8 tokens, and WanPipeline pads to whatever is passed.
NATIVE_CALL: dict = {
    "num_frames": 17,
    "height": 64,
    "width": 64,
    "num_inference_steps": 25,
    "guidance_scale": 5.0,
    "max_sequence_length": 8,
}


def generate(pipe, prompts: list[str], seed: int = 0, **overrides) -> np.ndarray:
    """Videos [N, T, H, W, 3] in [0, 1] for `prompts`, one batched `pipe(...)` call at NATIVE_CALL.

    >>> videos = generate(pipe, ["a red circle moving left"])  # doctest: +SKIP
    """
    import torch

    kw = {**NATIVE_CALL, **overrides}
    with torch.no_grad():
        out = pipe(
            prompt=list(prompts),
            negative_prompt=[""] * len(prompts),
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            **kw,
        ).frames
    return np.asarray(out, np.float32)
