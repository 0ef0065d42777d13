"""Stage 3: assemble the trained parts into a standard `WanPipeline` folder, atomically.

    python -m benchmarks.reference_model.export --vae runs/vae/final \
        --transformer runs/transformer/final --out sol/models/assets/sol-tiny-wan

The folder is written next to `out`, checked (loads offline, safetensors only, one generation runs),
then swapped in with two renames, so a process loading `out` meanwhile never sees half a model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from benchmarks.reference_model import arch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5")


def assemble(vae_dir: Path, transformer_dir: Path):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    stats = torch.load(Path(transformer_dir) / "latent_stats.pt")
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    # WanPipeline de-normalises with these: latents * std + mean.
    vae.register_to_config(
        latents_mean=[round(float(v), 6) for v in stats["mean"]],
        latents_std=[round(float(v), 6) for v in stats["std"]],
    )
    transformer = WanTransformer3DModel.from_pretrained(transformer_dir).eval()
    return arch.build_pipeline(vae=vae, transformer=transformer, seed=0)


def verify(folder: Path) -> dict:
    """Offline load, safetensors only, one short generation of the right shape."""
    from diffusers import WanPipeline

    weights = [p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    bad = [str(p) for p in weights if p.suffix != ".safetensors"]
    if bad:
        raise RuntimeError(f"non-safetensors weights: {bad}")
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        pipe = WanPipeline.from_pretrained(folder)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(
            prompt="a red circle moving left",
            negative_prompt="",
            **arch.NATIVE,
            num_inference_steps=2,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            max_sequence_length=arch.MAX_SEQUENCE_LENGTH,
        ).frames
    assert out.shape == (1, 17, 64, 64, 3), out.shape
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "bytes": size,
        "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
    }


def export(vae_dir, transformer_dir, out) -> dict:
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}-{int(time.time())}")
    pipe = assemble(Path(vae_dir), Path(transformer_dir))
    pipe.save_pretrained(tmp, safe_serialization=True)
    info = verify(tmp)
    if info["bytes"] > 30 * 2**20:
        raise RuntimeError(f"folder is {info['bytes'] / 2**20:.1f} MiB > 30 MiB")
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).parent / "runs"
    ap.add_argument("--vae", default=str(here / "vae" / "final"))
    ap.add_argument("--transformer", default=str(here / "transformer" / "final"))
    ap.add_argument("--out", default="sol/models/assets/sol-tiny-wan")
    args = ap.parse_args(argv)
    info = export(args.vae, args.transformer, args.out)
    print(f"exported {args.out}: {info['bytes'] / 2**20:.1f} MiB, {len(info['files'])} files")


if __name__ == "__main__":
    main()
