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
    from sol.workload import load_workload

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
    from sol.workload import load_workload

    _check_mp4(out)
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
    _generate_video(loaded, wl, out, plan, force)


def _check_mp4(out: Path) -> None:
    if out.suffix.lower() != ".mp4":
        raise SolError(f"--out {out}: the output must be an .mp4 file path")


def _generate_video(loaded, wl, out: Path, plan, force: bool) -> None:
    import time

    import torch

    from sol.bench.runner import generate
    from sol.quality.video import frame_strip, write_mp4

    handle = None
    if plan is not None:
        from sol.runtime import apply_plan

        handle = apply_plan(loaded.pipe, plan, force=force)
        console.print(f"applied plan ({len(handle.plan.techniques)} techniques)")
    with progress_bar("denoising", total=wl.num_inference_steps) as tick:
        t0 = time.perf_counter()
        with torch.no_grad():
            video = generate(loaded.pipe, wl, step_callback=tick)[0]
        dt = time.perf_counter() - t0
    write_mp4(video, out)
    strip = frame_strip(video, out.with_suffix(".png"))
    console.print(f"wrote [bold]{out}[/] and [bold]{strip}[/] ({video.shape[0]} frames, {dt:.1f} s)")
    if handle is not None:
        handle.revert()


RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="where run folders live")]


def _printer():
    """Print one line per finished graph node (the graph's progress)."""
    labels = {"profile": "profiled the baseline", "skill_agent": "skill agent finished",
              "integrator": "integrator measured compositions", "gate": "quality gate judged candidates",
              "report": "report written", "approval": "decision recorded", "export": "exported"}  # fmt: skip

    def on_update(node: str, value) -> None:
        if node == "__interrupt__":
            return
        extra = ""
        if isinstance(value, dict):
            if value.get("fronts"):
                extra = f": {', '.join(value['fronts'])}"
            if value.get("failed"):
                extra = f": FAILED {', '.join(f'{k} ({v})' for k, v in value['failed'].items())}"
        err_console.print(f"[green]✓[/] {labels.get(node, node)}{extra}")

    return on_update


def _show_outcome(out, ask: bool = False, runs_dir: Path = Path("runs")) -> None:
    from sol.agent import driver

    if out.interrupt is not None and ask and sys.stdin.isatty():
        _candidates_table(out.interrupt["candidates"])
        console.print(f"report: {out.interrupt.get('report')}")
        choice = typer.prompt("approve which candidate? (id, 'reject', or 'later')", default=next(
            (c["id"] for c in out.interrupt["candidates"] if c["passed"]), "later"))  # fmt: skip
        if choice == "reject":
            text = typer.prompt("feedback (e.g. min_psnr=35 exclude=cache)", default="")
            out = driver.reject(
                out.run_dir.name, driver.parse_feedback(text), runs_dir=runs_dir, on_update=_printer()
            )
            return _show_outcome(out, ask=True, runs_dir=runs_dir)
        if choice != "later":
            out = driver.approve(out.run_dir.name, choice, runs_dir=runs_dir, on_update=_printer())
    if out.interrupt is not None:
        _candidates_table(out.interrupt["candidates"])
        console.print(f"report: [bold]{out.interrupt.get('report')}[/]")
        console.print(
            f"run [bold]{out.run_dir.name}[/] is waiting for approval: "
            f"`sol approve {out.run_dir.name} [--candidate ID]` or `sol reject {out.run_dir.name} --feedback ...`"
        )
        return
    console.print(f"run [bold]{out.run_dir}[/]: {out.status}")
    if out.report:
        console.print(f"report: [bold]{out.report.get('html')}[/]  summary: {out.report.get('markdown')}")
    if out.plan:
        console.print(f'plan: [bold]{out.plan}[/]  (apply with sol.apply_plan(pipe, "{out.plan}"))')


def _candidates_table(cands) -> None:
    table = Table("id", "candidate", "speedup", "PSNR", "gate", title="candidates")
    for c in cands:
        psnr = c.get("psnr")
        table.add_row(c["id"], c["label"], f"{c['speedup']:.2f}x" if c.get("speedup") else "-",
                      f"{float(psnr):.1f}" if psnr is not None else "-",
                      "[green]pass[/]" if c["passed"] else "[red]fail[/]")  # fmt: skip
    console.print(table)


@app.command("optimize")
def optimize_cmd(
    model: ModelOpt = "sol-tiny-wan",
    gpu: GpuOpt = "auto",
    workload: WorkloadOpt = "default",
    budget: Annotated[
        str, typer.Option("--budget", help="lossless, near-lossless, balanced, aggressive")
    ] = "near-lossless",
    effort: Annotated[str, typer.Option("--effort", help="quick, standard, thorough")] = "standard",
    skills: Annotated[
        str | None, typer.Option("--skills", help="comma-separated skill families (default: all)")
    ] = None,
    approve: Annotated[str, typer.Option("--approve", help="ask (on a terminal), manual, or auto")] = "ask",
    executor: Annotated[
        str, typer.Option("--executor", help="ray, or local (in-process, for debugging)")
    ] = "ray",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="join this Ray cluster")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    layers: LayersOpt = None,
    allow_pickle: PickleOpt = False,
    vbench_python: Annotated[
        str | None, typer.Option("--vbench-python", help="VBench's own interpreter")
    ] = None,
    checkpoint_url: Annotated[
        str | None, typer.Option("--checkpoint-url", help="postgresql://… instead of SQLite")
    ] = None,
) -> None:
    """Find the fastest near-lossless stack of techniques for a model on this hardware."""
    from sol.agent import driver

    out = driver.start(
        model=model, gpu=gpu, workload=workload, budget=budget, effort=effort,
        skills=[s.strip() for s in skills.split(",") if s.strip()] if skills else None,
        approve=approve, executor=executor, ray_address=ray_address, runs_dir=runs_dir, layers=layers,
        allow_pickle=allow_pickle, vbench_python=vbench_python, checkpoint_url=checkpoint_url,
        on_update=_printer(),
    )  # fmt: skip
    _show_outcome(out, ask=approve == "ask", runs_dir=runs_dir)


@app.command("resume")
def resume_cmd(
    run: Annotated[str, typer.Argument(help="run id or folder")], runs_dir: RunsDirOpt = Path("runs")
) -> None:
    """Continue a killed or interrupted run from its last checkpoint."""
    from sol.agent import driver

    _show_outcome(driver.resume(run, runs_dir, on_update=_printer()), runs_dir=runs_dir)


@app.command("runs")
def runs_cmd(runs_dir: RunsDirOpt = Path("runs")) -> None:
    """List runs and their state."""
    from sol.agent import driver

    table = Table("run", "model", "workload", "status", "plan")
    for r in driver.list_runs(runs_dir):
        table.add_row(r["run"], r["model"], r["workload"], r["status"], r["plan"])
    console.print(table)


@app.command("approve")
def approve_cmd(
    run: Annotated[str, typer.Argument(help="run id or folder")],
    candidate: Annotated[
        str | None, typer.Option("--candidate", help="candidate id (default: the best that passed)")
    ] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Approve a candidate of a paused run and export its plan."""
    from sol.agent import driver

    _show_outcome(
        driver.approve(run, candidate, note=note, runs_dir=runs_dir, on_update=_printer()), runs_dir=runs_dir
    )


@app.command("reject")
def reject_cmd(
    run: Annotated[str, typer.Argument(help="run id or folder")],
    feedback: Annotated[
        str, typer.Option("--feedback", help="e.g. 'min_psnr=35 exclude=quantization too blurry'")
    ] = "",
    min_psnr: Annotated[float | None, typer.Option("--min-psnr")] = None,
    budget: Annotated[str | None, typer.Option("--budget")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="skill family to leave out")] = None,
    prefer: Annotated[str | None, typer.Option("--prefer", help="candidate id to start from")] = None,
    candidate: Annotated[str | None, typer.Option("--candidate", help="the candidate being rejected")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Reject with feedback; the integrator searches again under stricter settings."""
    from sol.agent import driver

    fb = driver.parse_feedback(feedback, min_psnr=min_psnr, budget=budget, exclude=exclude, prefer=prefer)
    _show_outcome(
        driver.reject(run, fb, candidate=candidate, runs_dir=runs_dir, on_update=_printer()),
        runs_dir=runs_dir,
    )


@app.command("apply")
def apply_cmd(
    plan: Annotated[Path, typer.Argument(help="plan.json exported by sol optimize")],
    prompt: Annotated[str, typer.Option("--prompt", "-p")],
    out: Annotated[Path, typer.Option("--out", "-o")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="default: the plan's model")] = None,
    gpu: GpuOpt = "auto",
    force: Annotated[bool, typer.Option("--force")] = False,
) -> None:
    """Re-apply a plan in a fresh process and generate at the plan's workload sizes."""
    from sol.plan import load_plan

    _check_mp4(out)
    p = load_plan(plan)
    if p.workload is None:
        raise SolError(f"{plan} records no workload; use `sol generate --plan {plan}` with explicit sizes")
    wl = p.workload.model_copy(update={"prompts": [prompt], "seeds": [0]})
    loaded, _ = _load(model or p.model.name, gpu)
    _generate_video(loaded, wl, out, p, force)


def _use_report_renderer() -> None:
    """Runs render their report with ``sol.report`` (orchestration never imports the interfaces)."""
    try:
        from sol.agent.reporting import set_renderer
        from sol.report import build_report
    except ImportError:  # no optimize extra: no runs to report on either
        return
    set_renderer(build_report)


def main() -> None:
    """Entry point: run the app, turning SolError into one line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from sol.hardware import configure_cpu_threads

    _use_report_renderer()

    configure_cpu_threads()
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
