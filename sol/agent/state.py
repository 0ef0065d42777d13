"""The graph's state: ids, paths and small JSON only; videos and tensors live in the run folder."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


def merge(a: dict | None, b: dict | None) -> dict:
    """Reducer for results that parallel skill agents write side by side; a key written as None is
    removed (a skill that failed before a resume and succeeded after it is no longer failed)."""
    return {k: v for k, v in {**(a or {}), **(b or {})}.items() if v is not None}


class RunState(TypedDict, total=False):
    spec: dict[str, Any]  # model, workload, budget, effort, skills, approve, executor, run_dir …
    profile: str  # path of profile.json
    fronts: Annotated[dict[str, str], merge]  # skill family -> front JSON path
    failed: Annotated[dict[str, str], merge]  # skill family -> why it failed
    settings: dict[str, Any]  # integrator round: min_psnr, exclude, prefer, round
    integration: str  # path of integration-N.json
    candidates: str  # path of candidates-N.json (with gate verdicts)
    summary: list[dict[str, Any]]  # id, label, speedup, psnr, passed — for the approval prompt
    report: dict[str, str]  # html / markdown paths
    decision: dict[str, Any]  # the person's (or auto) decision at approval
    feedback: Annotated[list[dict[str, Any]], operator.add]
    plan: str
    status: str
    notes: Annotated[list[str], operator.add]  # what a resume recovered (a skill re-run, and why)
