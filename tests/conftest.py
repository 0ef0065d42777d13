"""Shared fixtures: real models and workloads, small enough for CI."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
warnings.filterwarnings("ignore", message=".*weights are not in this checkout.*")


def pytest_configure(config):
    from sol.agent.reporting import set_renderer
    from sol.hardware import configure_cpu_threads
    from sol.report import build_report

    configure_cpu_threads()
    set_renderer(build_report)  # as the CLI and the review app do


@pytest.fixture(scope="session")
def tiny():
    """A random tiny Wan pipeline (4 layers, dim 128): the fastest real WanPipeline."""
    from sol.models import load_model

    return load_model("tiny-wan-random")


@pytest.fixture(scope="session")
def tiny_workload():
    """Seconds on the tiny model: 5 frames, 32x32, 3 steps, CFG on."""
    from sol.workload import Workload

    return Workload(
        name="tiny",
        prompts=["a red circle moving right"],
        num_frames=5,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=4.5,
    )
