"""A plain diffusers script that applies a Sol plan, and serves it on a bare HTTP port.

Sol's whole runtime API is one call, ``sol.apply_plan(pipe, plan)`` (no extras: no Ray, no web
framework). The rest of this file is an ordinary diffusers script, plus a standard-library HTTP server
so that a client can ask for videos::

    pip install /path/to/sol            # no extras
    python examples/diffusers_script.py --model path/to/diffusers-folder --plan plan.json --port 8000
    curl -X POST 127.0.0.1:8000/generate -d '{"prompt": "a red circle moving right"}' -o video.mp4

``--model`` is the folder the plan was made for (its fingerprint is checked; ``sol optimize`` prints
it); ``sol-tiny-wan`` is the reference model shipped in the package. Videos are made at the sizes,
steps and guidance the plan was measured at (its ``workload``): that is where its speedup and quality
hold. One request at a time: a pipeline is not thread-safe, and a video saturates the device anyway.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

import sol
from sol.video import write_mp4


def load(model: str, plan_path: str, device: str = "cpu") -> tuple[DiffusionPipeline, sol.PlanHandle]:
    """The pipeline with the plan applied. The plan is read first: a bad one fails before the model loads.

    >>> pipe, handle = load("path/to/model", "plan.json")  # doctest: +SKIP
    """
    plan = sol.load_plan(plan_path)
    if plan.workload is None:
        raise sol.SolError(f"{plan_path}: this plan has no workload (re-export it with `sol optimize`)")
    model = sol_model_path(model)
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32).to(device)
    return pipe, sol.apply_plan(pipe, plan)


def sol_model_path(model: str) -> str:
    """``sol-tiny-wan`` names the reference model shipped in the package; anything else is a folder."""
    if model == "sol-tiny-wan":
        from sol.models.loading import reference_model_path

        return str(reference_model_path())
    return model


def generate(pipe: DiffusionPipeline, handle: sol.PlanHandle, prompt: str, seed: int = 0) -> bytes:
    """One video as mp4 bytes, at the plan's sizes, steps and guidance."""
    kwargs = handle.plan.workload.pipe_kwargs(prompt, pipe)
    with torch.no_grad():
        frames = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").frames[
            0
        ]
    with tempfile.TemporaryDirectory() as tmp:
        return write_mp4(frames, Path(tmp) / "video.mp4").read_bytes()


def make_server(pipe: DiffusionPipeline, handle: sol.PlanHandle, host: str, port: int) -> ThreadingHTTPServer:
    """``POST /generate`` with ``{"prompt": ..., "seed": 0}`` answers ``video/mp4``; ``GET /health`` the plan."""
    lock = threading.Lock()  # one generation at a time

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/health":
                return self._send(404, b"not found\n", "text/plain")
            info = {"model": handle.plan.model.name, "techniques": [t.kind for t in handle.plan.techniques]}
            self._send(200, json.dumps(info).encode(), "application/json")

        def do_POST(self) -> None:
            if self.path != "/generate":
                return self._send(404, b"not found\n", "text/plain")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt, seed = str(body["prompt"]), int(body.get("seed", 0))
            except (ValueError, KeyError, TypeError):
                return self._send(400, b'send JSON: {"prompt": "...", "seed": 0}\n', "text/plain")
            with lock:
                video = generate(pipe, handle, prompt, seed)
            self._send(200, video, "video/mp4")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 — the base class's name
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the diffusers folder the plan was made for")
    parser.add_argument("--plan", required=True, help="plan.json exported by `sol optimize`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    pipe, handle = load(args.model, args.plan, args.device)
    server = make_server(pipe, handle, args.host, args.port)
    print(f"serving {args.model} with {len(handle.plan.techniques)} techniques on "
          f"http://{args.host}:{server.server_address[1]}/generate", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        handle.revert()


if __name__ == "__main__":
    main()
