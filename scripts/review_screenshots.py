"""Screenshots for docs/review.md: the review app's pages and `sol optimize`'s progress display.

    python scripts/review_screenshots.py RUNS_DIR RUN_ID [--progress-from RUN_ID] [--out docs/img]

RUN_ID is a run paused for approval (`sol optimize --approve manual`). The review pages are shot in
headless Chromium (Playwright) from a real `sol serve` app on loopback; nothing is approved. The
progress display is the CLI's own rich bars (``sol.cli.progress_bars``) drawn from the run's
``progress/*.jsonl`` as they stood partway through the run (``--at``, a fraction of its duration),
exported by rich as SVG and shot in Chromium as PNG.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def progress_svg(run_dir: Path, at: float, out: Path) -> Path:
    """The progress bars as they stood at fraction ``at`` of the run (progress lines cut at that time)."""
    import json

    from rich.console import Console

    import sol.agent.progress as progress
    from sol.cli import progress_bars, update_bar

    lines = {p: p.read_text().splitlines() for p in sorted((run_dir / "progress").glob("*.jsonl"))}
    times = [json.loads(x)["t"] for ls in lines.values() for x in ls]
    t0, t1 = min(times), max(times)
    when = t0 + at * (t1 - t0)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "progress").mkdir()
        for path, ls in lines.items():
            kept = [x for x in ls if json.loads(x)["t"] <= when]
            if kept:
                (Path(tmp) / "progress" / path.name).write_text("\n".join(kept) + "\n")
        with mock.patch.object(progress.time, "time", return_value=when):  # elapsed and estimates at `when`
            console = Console(
                file=io.StringIO(), record=True, width=118, force_terminal=True, color_system="truecolor"
            )
            bars = progress_bars(console)
            tasks: dict = {}
            for agent in progress.read_progress(tmp):
                update_bar(bars, tasks, agent)
            console.print(bars.get_renderable())
    console.save_svg(str(out), title="sol optimize")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--at", type=float, default=0.6, help="when to show the progress (0-1 of the run)")
    parser.add_argument(
        "--progress-from", metavar="RUN_ID", help="draw the progress of this run (default: RUN_ID)"
    )
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from sol.review.app import create_app, running

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy: the screenshots never touch the run itself.
        runs = Path(tmp) / "runs"
        shutil.copytree(args.runs_dir / args.run_id, runs / args.run_id, symlinks=True)
        progress_run = args.runs_dir / (args.progress_from or args.run_id)
        svg = progress_svg(progress_run, args.at, Path(tmp) / "progress.svg")
        with running(create_app(runs)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
            page.goto(url + "/")
            page.screenshot(path=str(args.out / "review-runs.png"), full_page=True)
            page.goto(f"{url}/runs/{args.run_id}")
            page.wait_for_selector("#approve-form")
            page.frame_locator("iframe.report").locator("h1").first.wait_for()  # the framed report
            page.wait_for_timeout(3000)  # its videos' first frames
            # The report's frame is sandboxed (an opaque origin, drawn out of process): a full-page shot
            # leaves it blank below the viewport, so the viewport is made as tall as the page instead.
            page.set_viewport_size({"width": 1280, "height": page.evaluate("document.body.scrollHeight")})
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "review-run.png"))
            # The report's videos, side by side (its own page, as the run page links it).
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{url}/runs/{args.run_id}/report#videos")
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "review-videos.png"))
            # rich's SVG has a viewBox and no size: show it at its own size, then shoot the page.
            w, h = (float(x) for x in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text()).groups())
            shot = browser.new_page(viewport={"width": int(w), "height": int(h) + 1}, device_scale_factor=1)
            shot.goto(svg.as_uri())
            shot.screenshot(path=str(args.out / "progress.png"))
            browser.close()
    for name in ("review-runs.png", "review-run.png", "review-videos.png", "progress.png"):
        print(args.out / name)


if __name__ == "__main__":
    sys.exit(main())
