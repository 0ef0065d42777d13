"""Progress of a run's agents, written by the jobs and read by the interfaces through the run folder.

The jobs run in Ray actors (other processes, possibly other machines sharing the folder), so progress
cannot travel by callback to the CLI or the review app. Each agent appends JSON lines to
``<run>/progress/<agent>.jsonl`` (one ``write`` of one line in append mode: lines of one file never
interleave), and readers fold the file into an :class:`AgentProgress`:

- ``{"event": "start", "t": …, "planned": N, "estimate": true, "unit": "candidates"}``: an attempt
  began (a resumed or retried agent starts again: the reader counts from its last start);
- ``{"event": "item", "t": …, "done": k, "label": …, "speedup": x, "psnr": db, "passes": bool}``: one
  candidate judged (``speedup`` is the cost model's prediction until the race has timed it);
- ``{"event": "finish", "t": …, "done": k, "ok": bool, "error": "…"}``.

"Planned" is what the search expects to judge. A skill search's count is known only as it goes (each
technique's search space is built from measurements), so it is an estimate: the count the same agent
judged in the latest finished run of the same model, workload and effort in this runs folder, else a
rule of thumb from the effort preset; it grows when the search outruns it.

>>> w = ProgressWriter(run_dir, "skill-cache", planned=20)  # doctest: +SKIP
>>> with w: search_skill("cache", ctx, ev, progress=w.candidate)  # doctest: +SKIP
>>> [p.line() for p in read_progress(run_dir)]  # doctest: +SKIP
['skill-cache: 20/20 candidates, best 2.31x at 33.9 dB, 3 min 02 s']
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROGRESS_DIR = "progress"
# An agent whose file has not moved for this long, without a finish line, is no longer running
# (a killed process): readers say "stalled" instead of estimating a time left.
STALE_S = 15 * 60.0


def progress_path(run_dir: str | Path, agent: str) -> Path:
    """``<run>/progress/<agent>.jsonl`` (agent names are the executor's job names: ``skill-cache``)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in agent)
    return Path(run_dir) / PROGRESS_DIR / f"{safe}.jsonl"


def number(x: Any) -> float | None:
    """``x`` as a float, or None where it is missing, not a number or NaN (progress and run listings)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if not math.isnan(v) else None


class ProgressWriter:
    """Appends one agent's progress to its file; its methods are the searches' ``progress=`` callbacks.

    A context manager: ``start`` on entry, ``finish`` on exit (``ok=False`` with the error's first line
    when the body raised). Writing never raises: progress is never worth a failed search.

    >>> with ProgressWriter(run_dir, "integrator-1", planned=6) as w:  # doctest: +SKIP
    ...     Integrator(fronts, ev, min_psnr=30, progress=w.composition).run()
    """

    def __init__(self, run_dir: str | Path, agent: str, planned: int | None = None, *,
                 estimate: bool = False, unit: str = "candidates"):  # fmt: skip
        self.path = progress_path(run_dir, agent)
        self.agent = agent
        self.planned, self.estimate, self.unit = planned, estimate, unit
        self.done = 0

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "t": round(time.time(), 3), **data}, allow_nan=False, default=str)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND with one write of one line: concurrent writers never split a line.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def start(self) -> ProgressWriter:
        """An attempt begins (counts restart from zero)."""
        self.done = 0
        self._write("start", agent=self.agent, planned=self.planned, estimate=self.estimate, unit=self.unit)
        return self

    def item(self, label: str = "", speedup: float | None = None, psnr: float | None = None,
             passes: bool | None = None) -> None:  # fmt: skip
        """One unit of work judged; ``speedup``/``psnr``/``passes`` feed the "best so far"."""
        self.done += 1
        psnr_v = number(psnr)
        self._write("item", done=self.done, label=str(label)[:200], speedup=number(speedup),
                    psnr=None if psnr_v is None else (psnr_v if math.isfinite(psnr_v) else "inf"),
                    passes=passes)  # fmt: skip

    def candidate(self, result: Any, *_: Any) -> None:
        """``search_skill``'s callback: a ``CandidateResult`` screened or extended to more videos."""
        try:
            screen = getattr(result, "screen", None) or {}
            ok = bool(getattr(result, "ok", False))
            passes = ok and bool(screen.get("passes", True))
            speed = getattr(result, "speedup", None)
            if speed is None:
                speed = getattr(result, "predicted_speedup", None)
            self.item(getattr(result, "label", ""), speed, getattr(result, "psnr", None), passes)
        except Exception:  # noqa: BLE001 — a result of another shape still counts
            self.item()

    def composition(self, comp: Any, *_: Any) -> None:
        """The ``Integrator``'s callback: one composition judged (its predicted speedup, worst video)."""
        try:
            result = comp.result
            self.item(f"{comp.id}: {result.label}", comp.predicted_speedup, result.psnr, bool(comp.passes))
        except Exception:  # noqa: BLE001
            self.item()

    def tick(self, *_: Any, **__: Any) -> None:
        """A plain step (a baseline video generated): counts, no figures."""
        self.item()

    def finish(self, ok: bool = True, error: str | None = None) -> None:
        self._write("finish", done=self.done, ok=ok, error=error)

    def __enter__(self) -> ProgressWriter:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.finish(ok=False, error=f"{type(exc).__name__}: {first}".rstrip(": "))


# --- reading ------------------------------------------------------------------------------------------


@dataclass
class AgentProgress:
    """One agent's progress folded from its file (the last attempt)."""

    agent: str
    done: int = 0
    planned: int | None = None
    estimate: bool = False
    unit: str = "candidates"
    started: float | None = None
    updated: float | None = None
    finished: float | None = None
    ok: bool | None = None
    error: str | None = None
    best: dict[str, Any] | None = None  # label, speedup, psnr of the fastest passing item
    recent: list[dict[str, Any]] = field(default_factory=list)  # the last few items

    @property
    def running(self) -> bool:
        return self.finished is None and self.updated is not None and time.time() - self.updated < STALE_S

    @property
    def state(self) -> str:
        if self.finished is not None:
            return "done" if self.ok else "failed"
        return "running" if self.running else "stalled"

    @property
    def total(self) -> int | None:
        """Planned, never below what is done (an estimate the search outran grows with it)."""
        if self.finished is not None:
            return self.done
        if self.planned is None:
            return None
        return self.planned if self.done < self.planned else self.done + 1

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else (time.time() if self.running else self.updated)
        return max(0.0, (end or self.started) - self.started)

    @property
    def eta_s(self) -> float | None:
        """Time left at the pace so far (None before the first item, or once it stopped)."""
        if not self.running or not self.done or self.total is None:
            return None
        return self.elapsed_s / self.done * max(0, self.total - self.done)

    def best_text(self) -> str:
        if not self.best:
            return "-"
        s, p = self.best.get("speedup"), self.best.get("psnr")
        text = f"{s:.2f}x" if isinstance(s, int | float) else "?"
        if p == "inf":
            text += " (exact)"
        elif isinstance(p, int | float):
            text += f" at {p:.1f} dB"
        return text

    def line(self) -> str:
        """One plain line, e.g. ``skill-cache: 12/≈20 candidates, best 2.31x at 33.9 dB, 1 min 05 s``."""
        total = self.total
        count = (
            f"{self.done}/{'≈' if self.estimate and self.finished is None else ''}{total}"
            if total
            else str(self.done)
        )
        parts = [f"{self.agent}: {count} {self.unit}"]
        if self.best:
            parts.append(f"best {self.best_text()}")
        parts.append(format_seconds(self.elapsed_s))
        if self.state == "running" and self.eta_s is not None:
            parts.append(f"≈{format_seconds(self.eta_s)} left")
        elif self.state != "running":
            parts.append(self.state + (f" ({self.error})" if self.error else ""))
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "done": self.done, "planned": self.total, "estimate": self.estimate,
                "unit": self.unit, "state": self.state, "elapsed_s": round(self.elapsed_s, 1),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "best": self.best,
                "error": self.error, "line": self.line()}  # fmt: skip


def format_seconds(s: float) -> str:
    """``75`` → ``1 min 15 s``."""
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _better(item: dict, best: dict | None) -> bool:
    if not item.get("passes") or not isinstance(item.get("speedup"), int | float):
        return False
    return best is None or item["speedup"] > best["speedup"]


def read_agent(path: Path) -> AgentProgress:
    """Fold one progress file (a half-written last line is skipped)."""
    p = AgentProgress(path.stem)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return p
    for raw in lines:
        try:
            ev = json.loads(raw)
        except ValueError:
            continue
        kind, t = ev.get("event"), ev.get("t")
        if kind == "start":
            p = AgentProgress(path.stem, planned=ev.get("planned"), estimate=bool(ev.get("estimate")),
                              unit=ev.get("unit") or "candidates", started=t, updated=t)  # fmt: skip
        elif kind == "item":
            p.done, p.updated = int(ev.get("done") or p.done + 1), t
            item = {k: ev.get(k) for k in ("label", "speedup", "psnr", "passes")}
            if _better(item, p.best):
                p.best = item
            p.recent = [*p.recent[-4:], item]
        elif kind == "finish":
            p.done = int(ev.get("done") if ev.get("done") is not None else p.done)
            p.finished = p.updated = t
            p.ok, p.error = bool(ev.get("ok")), ev.get("error")
    return p


def read_progress(run_dir: str | Path) -> list[AgentProgress]:
    """Every agent of a run, in the order they started."""
    folder = Path(run_dir) / PROGRESS_DIR
    if not folder.is_dir():
        return []
    agents = [read_agent(f) for f in folder.glob("*.jsonl")]
    return sorted(agents, key=lambda a: (a.started or 0.0, a.agent))


def estimate_planned(
    run_dir: str | Path, agent: str, spec: dict, fallback: int | None
) -> tuple[int | None, bool]:
    """``(planned, is_estimate)`` for a skill search: the count the same agent judged in the latest
    finished run of the same model, workload and effort in this runs folder, else ``fallback``."""
    run_dir = Path(run_dir)
    key = (spec.get("model"), spec.get("workload_name") or spec.get("workload"), spec.get("effort"))
    best: tuple[float, int] | None = None
    for other in run_dir.parent.glob(f"*/{PROGRESS_DIR}/{progress_path(run_dir, agent).name}"):
        rd = other.parent.parent
        if rd.resolve() == run_dir.resolve():
            continue
        try:
            o = json.loads((rd / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if (o.get("model"), o.get("workload_name") or o.get("workload"), o.get("effort")) != key:
            continue
        prog = read_agent(other)
        if prog.finished is not None and prog.ok and prog.done and (best is None or prog.finished > best[0]):
            best = (prog.finished, prog.done)
    if best is not None:
        return best[1], True
    return fallback, True


# --- the jobs' writers (sol.agent.jobs) ----------------------------------------------------------------


def skill_writer(spec: dict, family: str, hardware: Any, plan: Any) -> ProgressWriter:
    """The writer of one skill agent, its planned count estimated (see the module docstring).

    The rule of thumb: per technique that runs here, its screen (search spaces hold ~6 settings) and
    one new setting per refine round; then the halving's re-judged survivors (twice the finalists per
    intermediate stage, the finalists on the whole split).
    """
    from sol.skills.base import skills_by_family

    techniques = [s for s in skills_by_family().get(family, []) if s.available(hardware) is None]
    top_k = max(1, int(getattr(plan, "top_k", 2)))
    stages = len(tuple(getattr(plan, "halving", ()) or ()))
    rule = len(techniques) * (6 + int(getattr(plan, "refine_rounds", 4))) + top_k * (2 * stages + 1)
    planned, estimate = estimate_planned(spec["run_dir"], f"skill-{family}", spec, rule or None)
    return ProgressWriter(spec["run_dir"], f"skill-{family}", planned, estimate=estimate)


def integrator_writer(spec: dict, rnd: int, fronts: int, max_evals: int) -> ProgressWriter:
    """The integrator's writer: each family's best single (judged again or reused) plus the
    compositions its evaluation budget allows."""
    name = f"integrator-{rnd}"
    planned, estimate = estimate_planned(spec["run_dir"], name, spec, fronts + max_evals)
    return ProgressWriter(spec["run_dir"], name, planned, estimate=estimate, unit="compositions")
