"""The review web app behind ``sol serve``: list runs, read a run's report, approve or reject it.

FastAPI on uvicorn (both in the optimize extra: the app acts on runs, which only the optimizer makes).
Pages are server-rendered HTML (Jinja2, autoescaped) with no JavaScript: a running job's page refreshes
itself, forms post back. Decisions go through ``sol.agent.driver.approve`` / ``reject``, exactly as the
CLI's ``sol approve`` / ``sol reject``, in a background thread (:mod:`sol.review.decisions`).

>>> app = create_app(Path("runs"))  # doctest: +SKIP
>>> serve(app, "127.0.0.1", 8765)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from sol.errors import SolError
from sol.review.decisions import DecisionBusy, Decisions
from sol.review.runs import RunReader, RunView
from sol.review.security import (
    ACCESS_COOKIE,
    MIN_TOKEN_CHARS,
    SESSION_COOKIE,
    Guard,
    host_allowed,
    is_loopback,
    run_dir_for,
    same_origin,
)

TEMPLATES = Path(__file__).with_name("templates")
MAX_FORM_BYTES = 64 * 1024
REFRESH_S = 2  # a running job's page reloads itself this often (no JavaScript)
# Pages: nothing from elsewhere, no scripts, forms post here only, not framed by another site.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The report (Sol's self-contained HTML: inline styles, data: videos) in a sandboxed frame of ours.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; media-src data:; "
    "frame-ancestors 'self'; sandbox"
)


def _speed(x: Any) -> str:
    return f"{float(x):.2f}x" if isinstance(x, int | float) and math.isfinite(float(x)) else "-"


def _db(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    if math.isinf(v) and v > 0:
        return "∞ (identical)"
    return f"{v:.1f} dB" if math.isfinite(v) else "-"


def _interval(iv: Any) -> str:
    if isinstance(iv, list | tuple) and len(iv) >= 2 and all(isinstance(v, int | float) for v in iv[:2]):
        return f"{iv[0]:.2f}–{iv[1]:.2f}x"
    return ""


def _ago(t: float | None) -> str:
    if not t:
        return ""
    s = int(time.time() - t)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters.update(speed=_speed, db=_db, interval=_interval, ago=_ago)
    return env


def create_app(runs_dir: Path, *, access_token: str | None = None, bind_host: str = "127.0.0.1",
               guard: Guard | None = None) -> FastAPI:  # fmt: skip
    """The app over ``runs_dir``. ``access_token``: required on every request when set (mandatory off
    loopback: :func:`check_bind`); ``bind_host``: where it listens (decides the ``Host`` check)."""
    from sol.agent.reporting import set_renderer
    from sol.report import build_report

    set_renderer(build_report)  # a rejection's new round renders its report as the CLI's does
    runs_dir = Path(runs_dir)
    guard = guard or Guard(access_token)
    token_required = bool(access_token)
    reader = RunReader(runs_dir)
    decisions = Decisions()
    env = _environment()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        decisions.shutdown()  # a decision under way finishes before the process ends

    app = FastAPI(title="Sol review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.decisions, app.state.guard, app.state.runs_dir = decisions, guard, runs_dir

    def page(name: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, runs_dir=str(runs_dir), **ctx)
        resp = HTMLResponse(html, status_code=status)
        if request.state.new_session:  # only pages set it: a framed report must never replace it
            resp.set_cookie(SESSION_COOKIE, request.state.session, httponly=True, samesite="strict")
        return resp

    def error(request: Request, status: int, message: str) -> HTMLResponse:
        return page("error.html", request, status=status, status_code=status, message=message)

    @app.middleware("http")
    async def guards(request: Request, call_next):
        if not host_allowed(request.headers.get("host"), bind_host, token_required):
            return Response("bad Host header: open the app at the address `sol serve` printed\n", 400)
        if token_required:
            given = request.query_params.get("token")
            if given is not None:
                if not guard.token_ok(given):
                    return Response("wrong access token\n", 401)
                # Trade the token in the address for a cookie, and drop it from the address bar.
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                resp = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                resp.set_cookie(ACCESS_COOKIE, guard.access_cookie(), httponly=True, samesite="strict")
                return resp
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            if not (guard.cookie_ok(request.cookies.get(ACCESS_COOKIE)) or guard.token_ok(bearer)):
                return Response(
                    "this server needs its access token: open the address `sol serve` printed\n", 401
                )
        # The browser session a page's CSRF tokens are bound to (set by the pages, see page()).
        session = request.cookies.get(SESSION_COOKIE)
        request.state.new_session = not session or len(session) != 32
        request.state.session = secrets.token_hex(16) if request.state.new_session else session
        resp = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer, browsers send `Origin: null` on form posts.
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def find(run_id: str) -> Path | None:
        return run_dir_for(runs_dir, run_id)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        views = reader.list(decisions.busy())
        running = any(v.state == "running" for v in views)
        return page("index.html", request, views=views, refresh=REFRESH_S * 2 if running else None)

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str):
        run_dir = find(run_id)
        if run_dir is None:
            return error(request, 404, f"no run {run_id!r} here")
        view = reader.read(run_dir, run_id in decisions.busy())
        decision = decisions.latest(run_id)
        refresh = REFRESH_S if view.state == "running" or (decision and decision.running) else None
        token = guard.csrf_token(run_id, request.state.session)
        return page("run.html", request, view=view, decision=decision, csrf=token, refresh=refresh,
                    families=view.spec.get("skills") or [], flash=request.query_params.get("m"))  # fmt: skip

    @app.get("/runs/{run_id}/report")
    def report(request: Request, run_id: str):
        run_dir = find(run_id)
        if run_dir is None or not (run_dir / "report.html").is_file():
            return error(request, 404, f"no report for run {run_id!r} (yet)")
        resp = FileResponse(run_dir / "report.html", media_type="text/html")
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    @app.get("/runs/{run_id}/plan.json")
    def plan(request: Request, run_id: str):
        run_dir = find(run_id)
        if run_dir is None or not (run_dir / "plan.json").is_file():
            return error(request, 404, f"no plan for run {run_id!r} (yet)")
        return FileResponse(run_dir / "plan.json", media_type="application/json", filename="plan.json")

    @app.get("/runs/{run_id}/progress.json")
    def progress(request: Request, run_id: str):
        run_dir = find(run_id)
        if run_dir is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        view = reader.read(run_dir, run_id in decisions.busy())
        d = decisions.latest(run_id)
        return {"run": run_id, "state": view.state, "status": view.status,
                "agents": [a.to_json() for a in view.agents],
                "decision": None if d is None else {"action": d.action, "by": d.by, "running": d.running,
                                                    "error": d.error, "status": d.status}}  # fmt: skip

    async def form(request: Request) -> dict[str, list[str]] | None:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    async def checked(request: Request, run_id: str) -> tuple[Path, dict[str, list[str]]] | Response:
        """The run folder and the form, or the refusal: 404 unknown run, 403 no valid CSRF token or a
        cross-site origin, 409 the run changed since the page was shown."""
        run_dir = find(run_id)
        if run_dir is None:
            return error(request, 404, f"no run {run_id!r} here")
        if not same_origin(request.headers.get("origin"), request.headers.get("host")):
            return error(request, 403, "refused: this request came from another site")
        data = await form(request)
        if data is None:
            return error(request, 413, "form too large")
        token = (data.get("csrf") or [""])[0]
        if not guard.check_csrf(token, run_id, request.cookies.get(SESSION_COOKIE)):
            return error(
                request, 403, "refused: the form's security token is missing or stale; reload the page"
            )
        view = await run_in_threadpool(reader.read, run_dir, run_id in decisions.busy())
        if (data.get("version") or [""])[0] != view.version:
            return error(request, 409, "this run changed since the page was shown (a new round of candidates); "
                         "reload it and decide again")  # fmt: skip
        return run_dir, data

    async def submit(
        request: Request, run_id: str, run_dir: Path, action: str, by: str, work, detail: str
    ) -> Response:
        """Start a decision in the background (one per run at a time), then show the run's page;
        a run no longer waiting, or already being decided, is refused (409)."""
        try:
            await run_in_threadpool(_still_waiting, reader, run_dir, decisions)
            decisions.submit(run_id, action, by, work, detail=detail)
        except (DecisionBusy, SolError) as e:
            return error(request, 409, str(e))
        shown = {"approve": "approving", "reject": "rejecting"}[action]
        return RedirectResponse(f"/runs/{run_id}?m={shown}", status_code=303)

    @app.post("/runs/{run_id}/approve")
    async def approve(request: Request, run_id: str):
        got = await checked(request, run_id)
        if isinstance(got, Response):
            return got
        run_dir, data = got
        from sol.agent import driver

        candidate = (data.get("candidate") or [""])[0] or None
        by = _who(data)
        note = (data.get("note") or [""])[0][:500]

        def work():
            return driver.approve(run_id, candidate, by=by, note=note, runs_dir=runs_dir)

        return await submit(request, run_id, run_dir, "approve", by, work, candidate or "the best candidate")

    @app.post("/runs/{run_id}/reject")
    async def reject(request: Request, run_id: str):
        got = await checked(request, run_id)
        if isinstance(got, Response):
            return got
        run_dir, data = got
        from sol.agent import driver

        by = _who(data)
        try:
            min_psnr = (data.get("min_psnr") or [""])[0].strip()
            fb = driver.parse_feedback(
                (data.get("feedback") or [""])[0][:2000],
                min_psnr=float(min_psnr) if min_psnr else None,
                exclude=[x for x in data.get("exclude", []) if x] or None,
            )
        except ValueError:
            return error(request, 400, f"min PSNR {min_psnr!r} is not a number")
        except SolError as e:
            return error(request, 400, str(e))
        candidate = (data.get("candidate") or [""])[0] or None

        def work():
            return driver.reject(run_id, fb, candidate=candidate, by=by, runs_dir=runs_dir)

        return await submit(request, run_id, run_dir, "reject", by, work, _feedback_text(fb))

    return app


def _still_waiting(reader: RunReader, run_dir: Path, decisions: Decisions) -> RunView:
    """Refuse at once (one line) when the run no longer waits for a decision."""
    busy = decisions.latest(run_dir.name)
    if busy is not None and busy.running:
        raise DecisionBusy(busy)
    view = reader.read(run_dir)
    if not view.waiting:
        raise SolError(f"run {run_dir.name} is not waiting for approval any more: {view.status}")
    return view


def _who(data: dict[str, list[str]]) -> str:
    name = " ".join((data.get("name") or [""])[0].split())[:80]
    return f"{name} (sol serve)" if name else "sol serve"


def _feedback_text(fb: dict) -> str:
    parts = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in fb.items() if k != "note" and v]
    if fb.get("note"):
        parts.append(json.dumps(fb["note"]))
    return " ".join(parts)


# ---------------------------------------------------------------- running it


def check_bind(host: str, token: str | None) -> None:
    """Loopback by default; any other address needs an access token (a one-line ``SolError`` otherwise)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise SolError(f"the access token must be at least {MIN_TOKEN_CHARS} characters (a random one: "
                       "python -c 'import secrets; print(secrets.token_urlsafe())')")  # fmt: skip
    if not is_loopback(host) and not token:
        raise SolError(
            f"--host {host} would let other machines approve plans: give an access token too "
            "(--token or $SOL_REVIEW_TOKEN), or keep the default 127.0.0.1"
        )


def _server(app: FastAPI, host: str, port: int, log_level: str):
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            server_header=False, proxy_headers=False)  # fmt: skip
    return uvicorn.Server(config)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8765, *, sock: socket.socket | None = None,
          log_level: str = "warning") -> None:  # fmt: skip
    """Serve ``app`` with uvicorn until interrupted (``sock``: an already bound socket, e.g. port 0)."""
    _server(app, host, port, log_level).run(sockets=[sock] if sock is not None else None)


@contextmanager
def running(app: FastAPI, *, log_level: str = "warning", start_timeout_s: float = 30.0) -> Iterator[str]:
    """``app`` served as ``serve`` serves it, in a background thread on a free loopback port, for the
    block's duration; yields its URL (the tests' server, and the docs' screenshots)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _server(app, "127.0.0.1", port, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise SolError(f"the review app did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
