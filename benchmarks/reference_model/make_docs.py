"""Figures for docs/reference-model.md: loss curves and a gallery of frame strips.

python -m benchmarks.reference_model.make_docs --model sol/models/assets/sol-tiny-wan
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sol.models.reference_data import check_video, generate

RUNS = Path(__file__).parent / "runs"
GALLERY = [
    ("a red circle moving left", "trained"),
    ("a blue square moving right", "trained"),
    ("a white square bouncing", "trained"),
    ("a yellow diamond growing", "trained"),
    ("a green triangle moving down", "trained"),
    ("a blue triangle moving up", "held out"),
    ("a yellow circle moving down", "held out"),
    ("a red triangle bouncing", "held out"),
]


def _read(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def loss_plot(runs: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = _read(runs / "vae" / "log.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    a = [r for r in vae if "rec" in r]
    axes[0].plot([r["step"] for r in a], [r["rec"] for r in a], lw=1)
    axes[0].set(title="VAE: weighted L1+L2 reconstruction", xlabel="step", yscale="log")
    e = [r for r in vae if "eval_psnr" in r]
    axes[1].plot([r["step"] for r in e], [r["eval_psnr"] for r in e], marker="o")
    axes[1].set(title="VAE: PSNR on 8 fixed clips (dB)", xlabel="step")
    # Phase 2 continues phase 1's weights; its loss is motion-weighted, so it is drawn apart.
    offset = 0
    for name, label in (("transformer", "flow-matching MSE"), ("transformer_motion", "motion-weighted")):
        t = [r for r in _read(runs / name / "log.jsonl") if "loss" in r]
        if not t:
            continue
        steps = offset + np.array([r["step"] for r in t])
        loss = np.array([r["loss"] for r in t])
        (line,) = axes[2].plot(steps, loss, lw=0.6, alpha=0.4)
        k = 10
        if len(loss) > k:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            axes[2].plot(steps[k - 1 :], smooth, lw=1.5, color=line.get_color(), label=label)
        offset = int(steps[-1])
    axes[2].legend(fontsize=8)
    axes[2].set(title="transformer: flow-matching loss", xlabel="step", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def gallery(pipe, out: Path, seed: int = 0) -> list[dict]:
    """One row per prompt: frames 0, 2, ..., 16 at 2x, with the prompt and the check's verdict."""
    from PIL import Image, ImageDraw

    prompts = [p for p, _ in GALLERY]
    videos = generate(pipe, prompts, seed=seed)
    scale, label_w = 2, 330
    rows, verdicts = [], []
    for (prompt, split), v in zip(GALLERY, videos, strict=True):
        r = check_video(v, prompt)
        verdicts.append({"prompt": prompt, "split": split, "passed": r.passed})
        strip = np.concatenate([v[i] for i in range(0, v.shape[0], 2)], axis=1)
        img = Image.fromarray((strip * 255).clip(0, 255).astype(np.uint8))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        row = Image.new("RGB", (label_w + img.width, img.height), (255, 255, 255))
        row.paste(img, (label_w, 0))
        d = ImageDraw.Draw(row)
        d.text((8, img.height // 2 - 14), prompt, fill=(0, 0, 0))
        d.text(
            (8, img.height // 2 + 4),
            f"{split} - check {'passed' if r.passed else 'FAILED'}",
            fill=(90, 90, 90),
        )
        rows.append(row)
    canvas = Image.new("RGB", (rows[0].width, sum(r.height + 4 for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + 4
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return verdicts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="sol/models/assets/sol-tiny-wan")
    ap.add_argument("--runs", default=str(RUNS))
    ap.add_argument("--img", default="docs/img")
    args = ap.parse_args(argv)
    img = Path(args.img)
    loss_plot(Path(args.runs), img / "reference-model-loss.png")
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(json.dumps(gallery(pipe, img / "reference-model-gallery.png"), indent=1))


if __name__ == "__main__":
    main()
