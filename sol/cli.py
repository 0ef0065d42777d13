"""The ``sol`` command: parse, validate, call into the package. Thin on purpose.

Every user error is one line on stderr (``error: …``) and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sol.errors import SolError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sol: optimize video diffusion inference.")
console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="built-in name, preset, local folder, or cached hub id")
]
GpuOpt = Annotated[
    str, typer.Option("--gpu", help="cpu, auto, or the GPU to tune for (h100, h200, a100, l40s…)")
]
WorkloadOpt = Annotated[str, typer.Option("--workload", "-w", help="smoke, default, long, or a JSON file")]
LayersOpt = Annotated[
    int | None, typer.Option("--layers", help="override the layer count of an architecture preset")
]
PickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="allow pickled .bin weights (they can run code)")
]


@contextmanager
def progress_bar(description: str, total: int | None):
    """A rich progress bar; yields ``advance()``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as p:
        task = p.add_task(description, total=total)
        yield lambda *_a, **_k: p.advance(task)


def _load(model: str, gpu: str, layers: int | None = None, allow_pickle: bool = False):
    from sol.hardware import resolve
    from sol.models import load_model

    hw = resolve(gpu)
    with err_console.status(f"loading {model} …"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            loaded = load_model(model, layers=layers, allow_pickle=allow_pickle, device=hw.torch_device)
        for w in caught:
            if "trained weights are not in this checkout" in str(w.message):
                err_console.print(f"[yellow]warning:[/] {w.message}")
    return loaded, hw


@app.command("models")
def models_cmd() -> None:
    """List built-in models and architecture presets."""
    from sol.models import list_models

    table = Table("name", "kind", "description", "available")
    for row in list_models():
        table.add_row(row["name"], row["kind"], row["description"], "yes" if row["available"] else "no")
    console.print(table)


@app.command("profile")
def profile_cmd(
    model: ModelOpt = "sol-tiny-wan",
    gpu: GpuOpt = "auto",
    workload: WorkloadOpt = "default",
    layers: LayersOpt = None,
    allow_pickle: PickleOpt = False,
    out: Annotated[Path | None, typer.Option("--out", help="JSON output path")] = None,
) -> None:
    """Profile a baseline generation: time by stage and by op class inside the transformer."""
    from sol.bench.profile import profile_pipeline
    from sol.bench.workload import load_workload

    wl = load_workload(workload)
    loaded, hw = _load(model, gpu, layers, allow_pickle)
    with progress_bar(f"profiling {model} on {wl.name}", total=len(wl.runs)) as tick:
        prof = profile_pipeline(loaded.pipe, wl, progress=tick)
    prof.update(model=model, hardware=hw.to_json(), model_info=loaded.adapter.describe())
    table = Table("stage", "ms", "share", title=f"{model} · {wl.name} · {hw.name}")
    for k, v in prof["stages"].items():
        table.add_row(k, f"{v:.0f}", f"{prof['stage_share'][k]:.1%}")
    table.add_row("total", f"{prof['total_ms']:.0f}", "100%")
    console.print(table)
    ops = Table("op class (one transformer call)", "ms", "share")
    for k, v in prof["op_classes"].items():
        ops.add_row(k, f"{v:.1f}", f"{prof['op_share'][k]:.1%}")
    console.print(ops)
    out = out or Path("runs") / "profiles" / f"{Path(model).name}-{wl.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(prof, indent=2))
    console.print(f"profile written to [bold]{out}[/]")


@app.command("generate")
def generate_cmd(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="what the video shows")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="output .mp4 (a .png frame strip is written beside)")
    ],
    model: ModelOpt = "sol-tiny-wan",
    plan: Annotated[Path | None, typer.Option("--plan", help="apply this plan.json first")] = None,
    gpu: GpuOpt = "auto",
    workload: WorkloadOpt = "default",
    frames: Annotated[int | None, typer.Option("--frames")] = None,
    height: Annotated[int | None, typer.Option("--height")] = None,
    width: Annotated[int | None, typer.Option("--width")] = None,
    steps: Annotated[int | None, typer.Option("--steps")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    layers: LayersOpt = None,
    allow_pickle: PickleOpt = False,
    force: Annotated[bool, typer.Option("--force", help="apply a plan made for another model")] = False,
) -> None:
    """Generate one video (sizes default to the workload's), optionally with a plan applied."""
    import time

    import torch

    from sol.bench.runner import generate
    from sol.bench.workload import load_workload
    from sol.video import frame_strip, write_mp4

    if out.suffix.lower() != ".mp4":
        raise SolError(f"--out {out}: the output must be an .mp4 file path")
    wl = load_workload(
        workload,
        prompts=[prompt],
        seeds=[seed],
        num_frames=frames,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
    )
    loaded, _ = _load(model, gpu, layers, allow_pickle)
    handle = None
    if plan is not None:
        from sol.runtime import apply_plan

        handle = apply_plan(loaded.pipe, plan, force=force)
        console.print(f"applied plan {plan} ({len(handle.plan.techniques)} techniques)")
    steps_bar = wl.num_inference_steps
    with progress_bar("denoising", total=steps_bar) as tick:
        loaded.pipe.set_progress_bar_config(disable=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            video = generate(loaded.pipe, wl, step_callback=tick)[0]
        dt = time.perf_counter() - t0
    write_mp4(video, out)
    strip = frame_strip(video, out.with_suffix(".png"))
    console.print(f"wrote [bold]{out}[/] and [bold]{strip}[/] ({video.shape[0]} frames, {dt:.1f} s)")
    if handle is not None:
        handle.revert()


def main() -> None:
    """Entry point: run the app, turning SolError into one line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        app(standalone_mode=False)
    except SolError as e:
        err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            err_console.print(f"[red]error:[/] {e.format_message()}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
