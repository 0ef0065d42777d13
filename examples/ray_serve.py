"""A Ray Serve deployment that loads a diffusers pipeline, applies a Sol plan, and serves generation.

    pip install '/path/to/sol[ray-serve]'      # Ray Serve; none of the optimizer's packages
    python examples/ray_serve.py --model path/to/diffusers-folder --plan plan.json --port 8000
    curl -X POST 127.0.0.1:8000/generate -d '{"prompt": "a red circle moving right"}' -o video.mp4

or with Ray's own CLI, on a running cluster::

    serve run examples.ray_serve:app model=path/to/diffusers-folder plan=plan.json

Each replica loads the pipeline once, applies the plan once (``sol.apply_plan``) and makes videos at
the sizes, steps and guidance the plan was measured at (its ``workload``): that is where its speedup
and quality hold. A replica makes one video at a time (``max_ongoing_requests=1``): more replicas, on
more GPUs, serve more at once (``--replicas``). ``sol-tiny-wan`` names the reference model in the package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response


@serve.deployment(max_ongoing_requests=1)
class VideoGenerator:
    """One replica: a pipeline with the plan applied. ``POST /generate`` answers ``video/mp4``."""

    def __init__(self, model: str, plan: str, device: str | None = None):
        import torch
        from diffusers import DiffusionPipeline

        import sol

        self.torch = torch
        loaded = sol.load_plan(plan)  # read first: a bad plan fails before the model loads
        if loaded.workload is None:
            raise sol.SolError(f"{plan}: this plan has no workload (re-export it with `sol optimize`)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe = DiffusionPipeline.from_pretrained(_model_path(model), torch_dtype=torch.float32).to(
            device
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.handle = sol.apply_plan(self.pipe, loaded)

    def generate(self, prompt: str, seed: int) -> bytes:
        from sol.video import write_mp4

        kwargs = self.handle.plan.workload.pipe_kwargs(prompt, self.pipe)
        generator = self.torch.Generator("cpu").manual_seed(seed)
        with self.torch.no_grad():
            frames = self.pipe(**kwargs, generator=generator, output_type="np").frames[0]
        with tempfile.TemporaryDirectory() as tmp:
            return write_mp4(frames, Path(tmp) / "video.mp4").read_bytes()

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/health"):
            plan = self.handle.plan
            info = {"model": plan.model.name, "techniques": [t.kind for t in plan.techniques]}
            return Response(json.dumps(info), media_type="application/json")
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/generate"):
            return Response("not found\n", status_code=404, media_type="text/plain")
        try:
            body = await request.json()
            prompt, seed = str(body["prompt"]), int(body.get("seed", 0))
        except (ValueError, KeyError, TypeError):
            return Response(
                'send JSON: {"prompt": "...", "seed": 0}\n', status_code=400, media_type="text/plain"
            )
        # In a thread: the replica's event loop keeps answering health checks meanwhile.
        video = await asyncio.to_thread(self.generate, prompt, seed)
        return Response(video, media_type="video/mp4")


def _model_path(model: str) -> str:
    if model == "sol-tiny-wan":
        from sol.models.loading import reference_model_path

        return str(reference_model_path())
    return model


def app(args: dict[str, str]) -> Application:
    """For ``serve run examples.ray_serve:app model=... plan=... [device=cuda] [replicas=2]``."""
    deployment = VideoGenerator.options(num_replicas=int(args.get("replicas", 1)))
    if "num_cpus" in args or "num_gpus" in args:
        deployment = deployment.options(
            ray_actor_options={
                "num_cpus": float(args.get("num_cpus", 1)),
                "num_gpus": float(args.get("num_gpus", 0)),
            }
        )
    return deployment.bind(args["model"], str(Path(args["plan"]).resolve()), args.get("device"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the diffusers folder the plan was made for")
    parser.add_argument("--plan", required=True, help="plan.json exported by `sol optimize`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica (1 on a GPU box)")
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica")
    args = parser.parse_args(argv)
    import ray

    ray.init(include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    application = app({"model": args.model, "plan": args.plan, "replicas": str(args.replicas),
                       "num_cpus": str(args.num_cpus), "num_gpus": str(args.num_gpus)})  # fmt: skip
    serve.run(application, route_prefix="/", blocking=False)
    print(f"serving {args.model} on http://{args.host}:{args.port}/generate (Ctrl+C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops Serve and Ray too
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
