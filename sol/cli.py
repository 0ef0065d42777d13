"""The ``sol`` command: parse, validate, call into the package. Thin on purpose.

Every user error is one line on stderr (``error: …``) and exit code 2, never a traceback.

Parsing is the standard library's argparse, so that ``sol --help``, ``models``, ``skills``,
``profile``, ``generate`` and ``apply`` run on a no-extras install (``pip install sol``, what an
inference server has). rich draws tables and progress bars on a terminal where it is installed;
plain text otherwise (and whenever output is piped). ``optimize``, ``runs``, ``approve``, ``reject``,
``resume`` and ``serve`` need the optimize extra and say so in one line where it is missing.

>>> main(["generate", "--model", "tiny-wan-random", "--prompt", "a red circle", "--out", "v.mp4"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sol.errors import SolError

try:  # optional: nicer tables and progress bars on a terminal
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError:
    Console = None

OPTIMIZE_EXTRA = "pip install 'sol[optimize]'"
# Import names the optimize extra provides and the search needs (rich is optional, see above).
OPTIMIZE_MODULES = ("ray", "langgraph", "langgraph.checkpoint.sqlite", "torchmetrics", "matplotlib")

# A cell of a table: its text, or (text, style) where rich may colour it ("green", "red").
Cell = str | tuple[str, str]


class Output:
    """Where the CLI writes: rich on a terminal where it is installed, plain text otherwise (same words).

    >>> Output(use_rich=False).table(["a", "b"], [["1", ("ok", "green")]])  # doctest: +NORMALIZE_WHITESPACE
    a  b
    -  --
    1  ok
    """

    def __init__(self, use_rich: bool | None = None):
        # rich on a terminal only: piped output stays plain, grep-able and never folded at 80 columns
        self.rich = (Console is not None and sys.stdout.isatty()) if use_rich is None else use_rich
        if self.rich:
            self._out, self._err = Console(), Console(stderr=True)

    def em(self, value: Any) -> str:
        """``value`` in bold where rich draws (escaped: a path may hold brackets)."""
        return f"[bold]{escape(str(value))}[/]" if self.rich else str(value)

    def lit(self, value: Any) -> str:
        """``value`` as it is: rich would read ``[...]`` in it as markup."""
        return escape(str(value)) if self.rich else str(value)

    def print(self, text: str = "") -> None:
        """A line on stdout; ``text`` may hold :meth:`em` parts."""
        if self.rich:
            self._out.print(text, soft_wrap=True)  # no line breaks inserted into paths when piped
        else:
            print(text, flush=True)

    def note(self, text: str, mark: tuple[str, str] | None = None) -> None:
        """A line on stderr, after an optional (symbol, style) mark such as ("✓", "green")."""
        if self.rich:
            prefix = f"[{mark[1]}]{mark[0]}[/] " if mark else ""
            self._err.print(prefix + text, highlight=False)
        else:
            print((f"{mark[0]} " if mark else "") + text, file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        """The one ``error: …`` line a user error becomes."""
        if self.rich:
            self._err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Cell]], title: str | None = None) -> None:
        """A table on stdout; plain text pads columns to their widest cell."""
        cells = [[c if isinstance(c, tuple) else (str(c), "") for c in row] for row in rows]
        if self.rich:
            t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
            for col in columns:  # fold, never cut: a technique kind or a path must stay whole
                t.add_column(col, overflow="fold")
            for row in cells:
                t.add_row(*(f"[{style}]{escape(text)}[/]" if style else escape(text) for text, style in row))
            self._out.print(t)
            return
        cells = [
            [(text.replace("\n", ", "), style) for text, style in row] for row in cells
        ]  # one line a row
        widths = [max([len(col)] + [len(row[i][0]) for row in cells]) for i, col in enumerate(columns)]
        lines = [f"{title}:"] if title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for row in cells:
            lines.append("  ".join(t.ljust(w) for (t, _), w in zip(row, widths, strict=True)).rstrip())
        print("\n".join(lines), flush=True)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """A progress bar on stderr; yields ``advance()`` (extra arguments are ignored)."""
        if self.rich:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())  # fmt: skip
            with Progress(*columns, console=self._err, transient=False) as p:
                task = p.add_task(description, total=total)
                yield lambda *_a, **_k: p.advance(task)
            return
        done, t0, tty = 0, time.perf_counter(), sys.stderr.isatty()

        def advance(*_a, **_k) -> None:
            nonlocal done
            done += 1
            if tty:  # a counter that rewrites itself; logs get the one final line only
                print(f"\r{description} {done}/{total or '?'}", end="", file=sys.stderr, flush=True)

        try:
            yield advance
        except BaseException:
            if tty and done:  # end the counter's line before the error line
                print(file=sys.stderr)
            raise
        lead = "\r" if tty else ""
        print(
            f"{lead}{description} {done}/{total or '?'} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr
        )

    @contextmanager
    def status(self, text: str) -> Iterator[None]:
        """A spinner while something slow runs (without rich: a line on a terminal, nothing in logs)."""
        if self.rich:
            with self._err.status(escape(text)):
                yield
        else:
            if sys.stderr.isatty():
                print(text, file=sys.stderr, flush=True)
            yield


ui = Output()


# ---------------------------------------------------------------- parsing


class UsageError(Exception):
    """A malformed command line (unknown option, missing argument, bad number)."""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows a default where there is one worth showing (not None, not False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not any(action.default is x for x in (None, False, argparse.SUPPRESS))  # 0 is shown
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        kwargs.setdefault("allow_abbrev", False)  # `--lay 2` must not mean --layers
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # argparse prints usage and exits; Sol prints one line
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _text(value: str) -> str:
    """An option's text value: not empty (``--gpu ""`` silently meant auto)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _model(p: argparse.ArgumentParser, default: str | None = "sol-tiny-wan", help: str | None = None) -> None:
    p.add_argument("--model", "-m", default=default, metavar="M", type=_text,
                   help=help or "built-in name, preset, local folder, or cached hub id")  # fmt: skip


def _gpu(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", default="auto", metavar="G", type=_text,
                   help="cpu, auto, or the GPU to tune for (h100, h200, a100, l40s…)")  # fmt: skip


def _workload(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", "-w", default="default", metavar="W", type=_text,
                   help="smoke, default, long, or a JSON file")  # fmt: skip


def _model_loading(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layers", type=int, metavar="N", help="override the layer count of an architecture preset"
    )
    p.add_argument(
        "--allow-pickle", action="store_true", help="allow pickled .bin weights (they can run code)"
    )


def _runs_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run folders live"
    )


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run id or folder")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each sub-command's ``func`` takes the parsed namespace.

    >>> build_parser().parse_args(["skills", "--gpu", "cpu"]).gpu
    'cpu'
    """
    parser = _Parser(
        prog="sol",
        description="Sol: optimize video diffusion inference.",
        epilog="The optimize extra (pip install 'sol[optimize]') is needed by optimize, runs, approve,\n"
        "reject, resume and serve; the other commands run on a plain `pip install sol`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)

    def command(name: str, func: Callable, doc: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=doc.split("\n")[0], description=doc)
        p.set_defaults(func=func)
        return p

    command("models", models_cmd, "List built-in models and architecture presets.")

    p = command(
        "skills", skills_cmd, "List every technique: family, phase, seams written, and whether it runs here."
    )
    _gpu(p)

    p = command(
        "profile",
        profile_cmd,
        "Profile a baseline generation: time by stage and by op class inside the transformer.",
    )
    _model(p)
    _gpu(p)
    _workload(p)
    _model_loading(p)
    p.add_argument("--out", type=Path, metavar="PATH", help="JSON output path")

    p = command(
        "generate",
        generate_cmd,
        "Generate one video (sizes default to the workload's), optionally with a plan applied.",
    )
    p.add_argument("--prompt", "-p", required=True, help="what the video shows")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="PATH",
                   help="output .mp4 (a .png frame strip is written beside)")  # fmt: skip
    _model(p)
    p.add_argument("--plan", type=Path, metavar="PATH", help="apply this plan.json first")
    _gpu(p)
    _workload(p)
    p.add_argument("--frames", type=int, help="frame count (4k+1)")
    p.add_argument("--height", type=int, help="height in pixels (a multiple of 16)")
    p.add_argument("--width", type=int, help="width in pixels (a multiple of 16)")
    p.add_argument("--steps", type=int, help="denoising steps")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _model_loading(p)
    p.add_argument("--force", action="store_true", help="apply a plan made for another model")

    p = command(
        "optimize",
        optimize_cmd,
        "Find the fastest near-lossless stack of techniques for a model on this hardware.",
    )
    _model(p)
    _gpu(p)
    _workload(p)
    p.add_argument("--budget", default="near-lossless", metavar="B",
                   help="lossless, near-lossless, balanced, aggressive")  # fmt: skip
    p.add_argument("--effort", default="standard", metavar="E", help="quick, standard, thorough")
    p.add_argument("--skills", metavar="LIST", help="comma-separated skill families (default: all)")
    p.add_argument("--approve", default="ask", metavar="HOW", help="ask (on a terminal), manual, or auto")
    p.add_argument("--executor", default="ray", metavar="X", help="ray, or local (in-process, for debugging)")
    p.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster")
    _runs_dir(p)
    _model_loading(p)
    p.add_argument("--vbench-python", metavar="PATH", help="VBench's own interpreter")
    p.add_argument("--vbench-weights", metavar="DIR",
                   help="VBench's model weights, laid out as its cache (default: VBench's cache)")  # fmt: skip
    p.add_argument("--checkpoint-url", metavar="URL", help="postgresql://… instead of SQLite")

    p = command("resume", resume_cmd, "Continue a killed or interrupted run from its last checkpoint.")
    _run_arg(p)
    _runs_dir(p)

    p = command("runs", runs_cmd, "List runs and their state.")
    _runs_dir(p)

    p = command("approve", approve_cmd, "Approve a candidate of a paused run and export its plan.")
    _run_arg(p)
    p.add_argument("--candidate", metavar="ID", help="candidate id (default: the best that passed)")
    p.add_argument("--note", default="", help="a note kept with the approval")
    _runs_dir(p)

    p = command(
        "reject", reject_cmd, "Reject with feedback; the integrator searches again under stricter settings."
    )
    _run_arg(p)
    p.add_argument("--feedback", default="", metavar="TEXT",
                   help="e.g. 'min_psnr=35 exclude=quantization too blurry'")  # fmt: skip
    p.add_argument("--min-psnr", type=float, metavar="DB", help="the new PSNR floor")
    p.add_argument("--budget", metavar="B", help="the new quality budget")
    p.add_argument(
        "--exclude", action="append", metavar="FAMILY", help="skill family to leave out (repeatable)"
    )
    p.add_argument("--prefer", metavar="ID", help="candidate id to start from")
    p.add_argument("--candidate", metavar="ID", help="the candidate being rejected")
    _runs_dir(p)

    p = command(
        "serve",
        serve_cmd,
        "The review web app: runs, their reports and progress; approve or reject in a browser.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; any other than loopback needs an access token")  # fmt: skip
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--token", metavar="TOKEN",
                   help="access token every request must carry (default: $SOL_REVIEW_TOKEN)")  # fmt: skip
    _runs_dir(p)

    p = command(
        "apply", apply_cmd, "Re-apply a plan in a fresh process and generate at the plan's workload sizes."
    )
    p.add_argument("plan", type=Path, help="plan.json exported by sol optimize")
    p.add_argument("--prompt", "-p", required=True, help="what the video shows")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="PATH", help="output .mp4")
    _model(p, default=None, help="default: the plan's model")
    _gpu(p)
    p.add_argument("--force", action="store_true", help="apply a plan made for another model")
    return parser


# ---------------------------------------------------------------- runtime commands (no extras)


def _load(model: str, gpu: str, layers: int | None = None, allow_pickle: bool = False):
    from sol.hardware import resolve
    from sol.models import load_model

    hw = resolve(gpu)
    with ui.status(f"loading {model} …"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            loaded = load_model(model, layers=layers, allow_pickle=allow_pickle, device=hw.torch_device)
        for w in caught:
            if "trained weights are not in this checkout" in str(w.message):
                ui.note(ui.lit(w.message), mark=("warning:", "yellow"))
    return loaded, hw


def models_cmd(args: argparse.Namespace) -> None:
    """List built-in models and architecture presets, and whether each fits this machine's memory."""
    from sol.models import list_models
    from sol.models.loading import GB, machine_memory

    here = machine_memory()
    rows = []
    for r in list_models():
        fits: Cell = "-"
        if r.get("fits") is not None:
            need = f"{r['memory_gb']:.1f} GB" if r["memory_gb"] >= 0.1 else "<0.1 GB"
            fits = (f"yes ({need})", "green") if r["fits"] else (f"no: needs {need}", "red")
        rows.append([r["name"], r["kind"], r["description"], "yes" if r["available"] else "no", fits])
    ui.table(["name", "kind", "description", "available", "fits here"], rows)
    ui.print(f"fits here: weights in float32 at the preset's depth against this machine's"
             f" {here.bytes / GB:.1f} GB of {here.what} (--layers N makes a preset smaller)")  # fmt: skip


def skills_cmd(args: argparse.Namespace) -> None:
    """Every registered technique, read from the registry, and whether it runs on this hardware."""
    from sol.hardware import resolve
    from sol.skills.base import skills_by_family

    hw = resolve(args.gpu)
    rows, left_out = [], []
    for family, skills in sorted(skills_by_family().items()):
        for skill in sorted(skills, key=lambda s: (s.phase, s.config_type.model_fields["kind"].default)):
            kind = skill.config_type.model_fields["kind"].default
            why = skill.available(hw)
            writes = "\n".join(sorted(str(s) for s in skill.writes)) or "-"
            available: Cell = ("yes", "green") if why is None else (f"no: {why}", "red")
            rows.append([family, kind, f"{skill.phase.name} ({int(skill.phase)})", writes, available])
            left_out += [
                f"  {kind} {option}: {reason}" for option, reason in skill.unavailable_options(hw).items()
            ]
    ui.table(["family", "kind", "phase", "writes", "available"], rows, title=f"skills on {hw.name}")
    if left_out:
        ui.print(f"options the search leaves out on {hw.name}:")
        for line in left_out:
            ui.print(ui.lit(line))


def profile_cmd(args: argparse.Namespace) -> None:
    """Profile a baseline generation: time by stage and by op class inside the transformer."""
    from sol.bench.profile import profile_pipeline
    from sol.workload import load_workload

    wl = load_workload(args.workload)
    _check_fits(args.model, args.gpu, wl, args.layers)
    loaded, hw = _load(args.model, args.gpu, args.layers, args.allow_pickle)
    with ui.progress(f"profiling {args.model} on {wl.name}", total=len(wl.runs)) as tick:
        prof = profile_pipeline(loaded.pipe, wl, progress=tick)
    prof.update(model=args.model, hardware=hw.to_json(), model_info=loaded.adapter.describe())
    rows = [[k, f"{v:.0f}", f"{prof['stage_share'][k]:.1%}"] for k, v in prof["stages"].items()]
    rows.append(["total", f"{prof['total_ms']:.0f}", "100%"])
    ui.table(["stage", "ms", "share"], rows, title=f"{args.model} · {wl.name} · {hw.name}")
    ops = [[k, f"{v:.1f}", f"{prof['op_share'][k]:.1%}"] for k, v in prof["op_classes"].items()]
    ui.table(["op class (one transformer call)", "ms", "share"], ops)
    out = args.out or Path("runs") / "profiles" / f"{Path(args.model).name}-{wl.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(prof, indent=2))
    ui.print(f"profile written to {ui.em(out)}")


def generate_cmd(args: argparse.Namespace) -> None:
    """Generate one video (sizes default to the workload's), optionally with a plan applied."""
    from sol.workload import load_workload

    _check_mp4(args.out)
    wl = load_workload(
        args.workload,
        flags=GENERATE_FLAGS,
        prompts=[args.prompt],
        seeds=[args.seed],
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
    )
    plan = None
    if args.plan is not None:  # every input is checked before minutes of model loading
        from sol.plan import load_plan

        plan = load_plan(args.plan)
    _check_fits(args.model, args.gpu, wl, args.layers)
    loaded, _ = _load(args.model, args.gpu, args.layers, args.allow_pickle)
    _generate_video(loaded, wl, args.out, plan, args.force)


# Which option set a workload field (an error in it is blamed on the option, not the workload file).
GENERATE_FLAGS = {"prompts": "--prompt", "seeds": "--seed", "num_frames": "--frames", "height": "--height",
                  "width": "--width", "num_inference_steps": "--steps", "guidance_scale": "--guidance"}  # fmt: skip


def _check_fits(model: str, gpu: str, wl, layers: int | None = None) -> None:
    from sol.hardware import resolve
    from sol.models.loading import check_fits

    check_fits(model, layers=layers, workload=wl, hardware=resolve(gpu))


def apply_cmd(args: argparse.Namespace) -> None:
    """Re-apply a plan in a fresh process and generate at the plan's workload sizes."""
    from sol.plan import load_plan

    _check_mp4(args.out)
    p = load_plan(args.plan)
    if p.workload is None:
        raise SolError(
            f"{args.plan} records no workload; use `sol generate --plan {args.plan}` with explicit sizes"
        )
    if not args.prompt.strip():
        raise SolError("--prompt is empty; say what the video shows")
    wl = p.workload.model_copy(update={"prompts": [args.prompt], "seeds": [0]})
    _check_fits(args.model or p.model.name, args.gpu, wl)
    loaded, _ = _load(args.model or p.model.name, args.gpu)
    _generate_video(loaded, wl, args.out, p, args.force)


def _check_mp4(out: Path) -> None:
    from sol.video import require_ffmpeg

    if out.suffix.lower() != ".mp4":
        raise SolError(f"--out {out}: the output must be an .mp4 file path")
    require_ffmpeg()  # before minutes of generation, not after


def _generate_video(loaded, wl, out: Path, plan, force: bool) -> None:
    import torch

    # The measurement layer's runner is plain torch: it needs no extra (the CLI may import it).
    from sol.bench.runner import generate
    from sol.video import frame_strip, write_mp4

    handle = None
    if plan is not None:
        from sol.runtime import apply_plan

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                handle = apply_plan(loaded.pipe, plan, force=force)
        except SolError as e:  # the runtime's API says force=True; this command's option is --force
            raise SolError(str(e).replace("pass force=True", "pass --force")) from None
        for w in caught:  # one line each, without Python's source line
            if issubclass(w.category, UserWarning):
                ui.note(
                    ui.lit(str(w.message).replace("(force=True)", "(--force)")), mark=("warning:", "yellow")
                )
        ui.print(f"applied plan ({len(handle.plan.techniques)} techniques)")
    with ui.progress("denoising", total=wl.num_inference_steps) as tick:
        t0 = time.perf_counter()
        with torch.no_grad():
            video = generate(loaded.pipe, wl, step_callback=tick)[0]
        dt = time.perf_counter() - t0
    write_mp4(video, out)
    strip = frame_strip(video, out.with_suffix(".png"))
    ui.print(f"wrote {ui.em(out)} and {ui.em(strip)} ({video.shape[0]} frames, {dt:.1f} s)")
    if handle is not None:
        handle.revert()


# ---------------------------------------------------------------- the search (optimize extra)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module blocked in sys.modules
        return False


def _need_optimize(command: str) -> None:
    """Refuse in one line, before anything runs, where the optimize extra is not installed."""
    if not all(_importable(m) for m in OPTIMIZE_MODULES):
        raise SolError(f"sol {command} needs the optimize extra: {OPTIMIZE_EXTRA}")


def _use_report_renderer() -> None:
    """Runs render their report with ``sol.report`` (orchestration never imports the interfaces)."""
    try:
        from sol.agent.reporting import set_renderer
        from sol.report import build_report
    except ImportError:  # no optimize extra: no runs to report on either
        return
    set_renderer(build_report)


def _driver(command: str):
    """``sol.agent.driver``, once the optimize extra is known to be here and reports can render."""
    _need_optimize(command)
    _use_report_renderer()
    from sol.agent import driver

    return driver


def _printer():
    """Print one line per finished graph node (the graph's progress)."""
    labels = {"profile": "profiled the baseline", "skill_agent": "skill agent finished",
              "integrator": "integrator measured compositions", "gate": "quality gate judged candidates",
              "report": "report written", "approval": "decision recorded", "export": "exported"}  # fmt: skip

    def on_update(node: str, value) -> None:
        if node.startswith("__"):  # LangGraph's own entries (__interrupt__, __metadata__)
            return
        extra = ""
        if isinstance(value, dict):
            if value.get("fronts"):
                extra = f": {', '.join(value['fronts'])}"
            failed = {k: v for k, v in (value.get("failed") or {}).items() if v}
            if failed:
                extra = f": FAILED {', '.join(f'{k} ({v})' for k, v in failed.items())}"
        text = labels.get(node, node) + extra
        ui.note(ui.lit(text), mark=("✓", "green"))
        for note in (value.get("notes") or []) if isinstance(value, dict) else []:
            ui.note(ui.lit(note), mark=("!", "yellow"))

    return on_update


class Watch:
    """Each agent's progress while a command drives a run: read from the run folder's progress files
    (the jobs run in Ray actors and write them there; ``sol.agent.progress``).

    On a terminal with rich: one progress bar per agent (judged against planned, best so far, elapsed
    time, an estimate of the time left), redrawn twice a second. Otherwise one line per agent as it
    finishes, so logs stay short.

    >>> with Watch() as w:  # doctest: +SKIP
    ...     driver.start(..., on_start=w.follow)
    """

    POLL_S = 0.5

    def __init__(self, run_dir: Path | None = None, out: Output | None = None):
        self.out = out or ui
        self.run_dir = run_dir
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: dict[str, Any] = {}
        self._reported: set[str] = set()
        self._seen: dict[str, float] = {}  # agent -> start time of the attempt shown
        self._progress = None

    def follow(self, run_dir: Path) -> None:
        """Watch ``run_dir`` (``driver.start``'s ``on_start``)."""
        self.run_dir = Path(run_dir)

    def __enter__(self) -> Watch:
        if self.out.rich:
            self._progress = progress_bars(self.out._err)
            self._progress.start()
        self._thread = threading.Thread(target=self._loop, name="sol-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()  # the final state of every bar
        if self._progress is not None:
            self._progress.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.POLL_S):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 — a display glitch must never stop a run
                pass

    def poll(self) -> None:
        if self.run_dir is None:
            return
        from sol.agent.progress import read_progress

        for agent in read_progress(self.run_dir):
            if self._progress is not None:
                update_bar(self._progress, self._tasks, agent)
            elif agent.finished is not None and self._seen.get(agent.agent) != agent.started:
                self._seen[agent.agent] = agent.started  # one line per finished attempt
                self.out.note(self.out.lit(agent.line()), mark=("·", "dim"))


def progress_bars(console=None):
    """The rich ``Progress`` the agents' bars live in (also used to draw docs/img/progress.svg)."""
    columns = (
        TextColumn("[bold]{task.description}", table_column=None),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[count]}"),
        TextColumn("best [cyan]{task.fields[best]}"),
        TextColumn("{task.fields[elapsed]}"),
        TextColumn("{task.fields[left]}"),
    )
    return Progress(*columns, console=console, refresh_per_second=2, transient=False)


def update_bar(progress, tasks: dict, agent) -> None:
    """Show one ``AgentProgress`` as a bar of ``progress`` (``tasks``: agent name -> task id)."""
    from sol.agent.progress import format_seconds

    total = agent.total
    approx = "≈" if agent.estimate and agent.finished is None else ""
    fields = {
        "count": f"{agent.done}/{approx}{total} {agent.unit}" if total else f"{agent.done} {agent.unit}",
        "best": agent.best_text(),
        "elapsed": format_seconds(agent.elapsed_s),
        "left": {"done": "[green]done[/]", "failed": "[red]failed[/]", "stalled": "[yellow]stalled[/]"}.get(
            agent.state, f"≈{format_seconds(agent.eta_s)} left" if agent.eta_s is not None else "…"
        ),
    }
    if agent.agent not in tasks:
        tasks[agent.agent] = progress.add_task(agent.agent, total=total, completed=agent.done, **fields)
    progress.update(tasks[agent.agent], total=total, completed=agent.done, **fields)


def _ask(question: str, default: str) -> str:
    try:
        reply = input(f"{question} [{default}]: ").strip()
    except EOFError:
        return default
    return reply or default


def _show_outcome(out, ask: bool = False, runs_dir: Path = Path("runs")) -> None:
    from sol.agent import driver

    if out.interrupt is not None and ask and sys.stdin.isatty():
        _candidates_table(out.interrupt["candidates"])
        ui.print(f"report: {ui.em(out.interrupt.get('report'))}")
        best = next((c["id"] for c in out.interrupt["candidates"] if c["passed"]), "later")
        choice = _ask("approve which candidate? (id, 'reject', or 'later')", best)
        if choice == "reject":
            text = _ask("feedback (e.g. min_psnr=35 exclude=cache)", "")
            with Watch(out.run_dir):  # the integrator runs again
                out = driver.reject(
                    out.run_dir.name, driver.parse_feedback(text), runs_dir=runs_dir, on_update=_printer()
                )
            return _show_outcome(out, ask=True, runs_dir=runs_dir)
        if choice != "later":
            out = driver.approve(out.run_dir.name, choice, runs_dir=runs_dir, on_update=_printer())
    if out.interrupt is not None:
        if out.interrupt.get("message"):  # e.g. a rejected round found nothing: earlier candidates
            ui.note(ui.lit(out.interrupt["message"]), mark=("!", "yellow"))
        _candidates_table(out.interrupt["candidates"])
        name = out.run_dir.name
        ui.print(f"report: {ui.em(out.interrupt.get('report'))}")
        ui.print(f"run {ui.em(name)} is waiting for approval: "
                 f"`sol approve {name} [--candidate ID]` or `sol reject {name} --feedback ...`")  # fmt: skip
        return
    ui.print(f"run {ui.em(out.run_dir)}: {out.status}")
    if out.report:
        ui.print(f"report: {ui.em(out.report.get('html'))}  summary: {out.report.get('markdown')}")
    if out.plan:
        ui.print(f'plan: {ui.em(out.plan)}  (apply with sol.apply_plan(pipe, "{out.plan}"))')


def _candidates_table(cands) -> None:
    rows = []
    for c in cands:
        psnr = c.get("psnr")
        rows.append([c["id"], c["label"], f"{c['speedup']:.2f}x" if c.get("speedup") else "-",
                     f"{float(psnr):.1f}" if psnr is not None else "-",
                     ("pass", "green") if c["passed"] else ("fail", "red")])  # fmt: skip
    ui.table(["id", "candidate", "speedup", "PSNR", "gate"], rows, title="candidates")


def optimize_cmd(args: argparse.Namespace) -> None:
    """Find the fastest near-lossless stack of techniques for a model on this hardware."""
    driver = _driver("optimize")
    # `--skills ","` or `--skills ""` names nothing: refused by the driver, never read as "all".
    skills = [s.strip() for s in args.skills.split(",") if s.strip()] if args.skills is not None else None
    with Watch() as watch:
        out = driver.start(
            model=args.model, gpu=args.gpu, workload=args.workload, budget=args.budget, effort=args.effort,
            skills=skills, approve=args.approve, executor=args.executor, ray_address=args.ray_address,
            runs_dir=args.runs_dir, layers=args.layers, allow_pickle=args.allow_pickle,
            vbench_python=args.vbench_python, checkpoint_url=args.checkpoint_url, on_update=_printer(),
            on_start=watch.follow, vbench_weights=args.vbench_weights,
        )  # fmt: skip
    _show_outcome(out, ask=args.approve == "ask", runs_dir=args.runs_dir)


def resume_cmd(args: argparse.Namespace) -> None:
    """Continue a killed or interrupted run from its last checkpoint."""
    driver = _driver("resume")
    with Watch(_run_dir(args.run, args.runs_dir)):
        out = driver.resume(
            args.run,
            args.runs_dir,
            on_update=_printer(),
            on_note=lambda t: ui.note(ui.lit(t), mark=("!", "yellow")),
        )
    _show_outcome(out, runs_dir=args.runs_dir)


def _run_dir(run: str, runs_dir: Path) -> Path | None:
    from sol.agent.runs import find_run

    try:
        return find_run(run, runs_dir)
    except SolError:
        return None  # the command itself says what is wrong


def runs_cmd(args: argparse.Namespace) -> None:
    """List runs and their state."""
    driver = _driver("runs")
    rows = [
        [r["run"], r["model"], r["workload"], r["status"], r["plan"]] for r in driver.list_runs(args.runs_dir)
    ]
    ui.table(["run", "model", "workload", "status", "plan"], rows)


def approve_cmd(args: argparse.Namespace) -> None:
    """Approve a candidate of a paused run and export its plan."""
    driver = _driver("approve")
    out = driver.approve(
        args.run, args.candidate, note=args.note, runs_dir=args.runs_dir, on_update=_printer()
    )
    _show_outcome(out, runs_dir=args.runs_dir)


def reject_cmd(args: argparse.Namespace) -> None:
    """Reject with feedback; the integrator searches again under stricter settings."""
    driver = _driver("reject")
    fb = driver.parse_feedback(
        args.feedback, min_psnr=args.min_psnr, budget=args.budget, exclude=args.exclude, prefer=args.prefer
    )
    with Watch(_run_dir(args.run, args.runs_dir)):  # a rejection runs the integrator again
        out = driver.reject(
            args.run, fb, candidate=args.candidate, runs_dir=args.runs_dir, on_update=_printer()
        )
    _show_outcome(out, runs_dir=args.runs_dir)


def serve_cmd(args: argparse.Namespace) -> None:
    """The review web app: runs, their reports and progress; approve or reject in a browser."""
    import socket

    token = args.token or os.environ.get("SOL_REVIEW_TOKEN") or None
    if not 0 <= args.port < 65536:
        raise SolError(f"--port {args.port}: use 1-65535, or 0 for any free port")
    _need_optimize("serve")
    if not all(_importable(m) for m in ("fastapi", "uvicorn")):
        raise SolError(f"sol serve needs FastAPI and uvicorn (the optimize extra): {OPTIMIZE_EXTRA}")
    from sol.review.app import check_bind, create_app, serve

    check_bind(args.host, token)  # before anything listens
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)  # listening before the address is printed: a script may connect at once
    except OSError as e:
        raise SolError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    if not args.runs_dir.is_dir():
        ui.note(f"no runs in {ui.lit(args.runs_dir)} yet (start one with `sol optimize --approve manual`)")
    app = create_app(args.runs_dir, access_token=token, bind_host=host)
    ui.print(f"Sol review: {ui.em(url)}  (runs in {ui.lit(args.runs_dir)}; Ctrl+C stops it)")
    serve(app, sock=sock)


# ---------------------------------------------------------------- entry point


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning is one ``warning: …`` line (Python's format adds the file and the source line)."""
    ui.note(
        ui.lit(str(message).splitlines()[0] if str(message) else category.__name__),
        mark=("warning:", "yellow"),
    )


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler's stop) unwinds like Ctrl-C: the executor shuts Ray down and
    removes its session folder on the way out. A SIGKILL cannot be caught; the reaper
    (``sol.cluster.reaper``) stops what Sol started then."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: parse, run one command, turn user errors into one line and exit code 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    # torch's profiler (Kineto) prints "USDT: … profiler_start/stop" at its highest level, 5.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _one_line_warning
    _exit_cleanly_on_sigterm()
    parser = build_parser()
    command = None
    try:
        args = parser.parse_args(argv)
        command = args.command
        if command is None:
            parser.print_help()
            return
        from sol.hardware import configure_cpu_threads

        configure_cpu_threads()
        args.func(args)
    except (UsageError, SolError) as e:
        ui.error(str(e))
        sys.exit(2)
    except ModuleNotFoundError as e:
        # An optional package the command reached for after all: name the extra, not a traceback.
        missing = (e.name or "").split(".")[0]
        if missing not in {m.split(".")[0] for m in OPTIMIZE_MODULES}:
            raise
        ui.error(f"sol {command} needs the optimize extra ({missing} is not installed): {OPTIMIZE_EXTRA}")
        sys.exit(2)
    except KeyboardInterrupt:
        ui.note("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
