"""The serving examples answer real requests on loopback, on the reference model with a plan applied.

examples/diffusers_script.py runs in this process (its server on a free port); examples/ray_serve.py
runs as a user starts it (`python examples/ray_serve.py ...`, its own Ray and Serve), and is stopped
with SIGTERM, which must shut Serve and Ray down.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# Small sizes: the plan's workload is what the examples generate at.
WORKLOAD = {"name": "serve", "prompts": ["a red circle moving right"], "num_frames": 5, "height": 32,
            "width": 32, "num_inference_steps": 3, "guidance_scale": 5.0}  # fmt: skip


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    """A plan for sol-tiny-wan as `sol optimize` exports it: text K/V reuse and a block cache."""
    from sol.models import load_model
    from sol.plan import HardwareRef, ModelRef, Plan
    from sol.skills.cache import BlockResidualCacheConfig, TextKVCacheConfig
    from sol.workload import Workload

    ref = load_model("sol-tiny-wan")
    assert ref.trained, "the reference model's weights are not in this checkout"
    return Plan.empty(
        model=ModelRef(name=ref.name, **ref.fingerprint.to_json()),
        hardware=HardwareRef(kind="cpu", name="cpu"),
        techniques=[TextKVCacheConfig(), BlockResidualCacheConfig()],
        workload=Workload(**WORKLOAD),
    ).save(tmp_path_factory.mktemp("serve") / "plan.json")


def _check_video(body: bytes, tmp_path: Path) -> None:
    from sol.video import read_mp4

    (tmp_path / "v.mp4").write_bytes(body)
    video = read_mp4(tmp_path / "v.mp4")
    assert video.shape == (5, 32, 32, 3), video.shape
    assert np.asarray(video, np.float32).std() > 1.0  # a picture, not a blank frame


def test_the_diffusers_script_serves_a_video_with_the_plan_applied(plan, tmp_path):
    ds = _example("diffusers_script")
    pipe, handle = ds.load("sol-tiny-wan", str(plan))
    server = ds.make_server(pipe, handle, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            assert c.get("/health").json() == {
                "model": "sol-tiny-wan",
                "techniques": ["cache.text_kv", "cache.block_residual"],
            }
            r = c.post("/generate", json={"prompt": "a blue square moving up", "seed": 1})
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
            _check_video(r.content, tmp_path)
            assert c.post("/generate", content=b"not json").status_code == 400
        # The plan really ran: its techniques counted work in the request.
        assert handle.applied.counters(), "the plan's techniques did nothing"
    finally:
        server.shutdown()
        server.server_close()
        handle.revert()


def test_the_diffusers_script_reads_the_plan_before_loading_the_model(tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline

    import sol

    ds = _example("diffusers_script")

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the plan was checked")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_load)
    bad = tmp_path / "plan.json"
    bad.write_text('{"schema_version": "one"}')
    with pytest.raises(sol.SolError):
        ds.load("sol-tiny-wan", str(bad))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_ray_serve_example_answers_a_request_on_loopback(plan, tmp_path):
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "ray_serve.py"),
            "--model",
            "sol-tiny-wan",
            "--plan",
            str(plan),
            "--port",
            str(port),
            "--num-cpus",
            "0.5",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=tmp_path,
        env=env,  # fmt: skip
    )
    try:
        line = proc.stdout.readline()  # printed once the deployment is ready
        assert f"http://127.0.0.1:{port}/generate" in line, (
            line,
            (tmp_path / "serve.log").read_text()[-3000:],
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            r = c.post("/generate", json={"prompt": "a blue square moving up", "seed": 1})
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text[:300]
            _check_video(r.content, tmp_path)
            health = c.get("/health").json()
            assert health["techniques"] == ["cache.text_kv", "cache.block_residual"]
        children = psutil.Process(proc.pid).children(recursive=True)  # Ray's and Serve's processes
        assert children
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    # Its Ray went with it (ray.shutdown on SIGTERM): none of the processes it started is left.
    deadline = time.time() + 30
    while alive := [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]:
        assert time.time() < deadline, [c.name() for c in alive]
        time.sleep(0.5)
