"""`sol serve`: the review app on a real uvicorn server over real paused runs (tests/review/conftest.py).

What a reviewer relies on: the listing shows a paused run; Approve in a browser exports its plan, as
`sol approve` does; a POST without the page's token, from another site, or for a run id that is not a
run folder's own name is refused; two approvals at once: one wins, the other is told; the default bind
is loopback, and any other address needs an access token.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from sol.review.app import create_app, running

CHROMIUM = Path("/usr/bin/chromium")
# The flags /work/.library/env/machines/python.md lists as known to work here (no network, no sandbox as root).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def server(runs):
    """The app's URL, served by `sol serve`'s own uvicorn settings in a thread on a free loopback port."""
    with running(create_app(runs[0])) as url:
        yield url


def _client(server: str) -> httpx.Client:
    return httpx.Client(base_url=server, follow_redirects=False, timeout=60)


def _form(html: str) -> dict[str, str]:
    return {
        "csrf": re.search(r'name="csrf" value="([^"]+)"', html).group(1),
        "version": re.search(r'name="version" value="([^"]+)"', html).group(1),
    }


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run `make browser` (apt chromium)")
def test_the_listing_shows_a_paused_run_and_approve_in_chromium_exports_its_plan(runs, server, tmp_path):
    from playwright.sync_api import sync_playwright

    runs_dir, paused = runs
    run = paused()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server + "/")
            row = page.locator(f'tr[data-run="{run}"]')
            assert "awaiting approval" in row.inner_text() and "pass" in row.inner_text()
            assert re.search(r"\d\.\d\dx", row.locator("td.num").first.inner_text())  # a speedup, e.g. 1.62x
            row.locator("a").first.click()
            page.wait_for_selector("#approve-form")
            assert page.locator('#approve-form input[name="candidate"][value="c1"]').is_checked()
            assert page.locator("iframe.report").count() == 1  # the report, videos side by side
            page.fill('#approve-form input[name="name"]', "Ada")
            page.click("#approve")
            # The approval runs in the background; the page refreshes itself until the plan shows.
            page.wait_for_selector("#plan", timeout=120_000)
            text = page.locator("#plan").inner_text()
        finally:
            browser.close()
    plan = json.loads((runs_dir / run / "plan.json").read_text())
    assert plan["approval"]["candidate"] == "c1" and plan["approval"]["approved_by"] == "Ada (sol serve)"
    assert "c1 approved by Ada (sol serve)" in text and "Download plan.json" in text
    with _client(server) as c:
        assert c.get(f"/runs/{run}/plan.json").json()["approval"]["candidate"] == "c1"


def test_a_post_without_the_pages_token_is_refused(runs, server):
    runs_dir, paused = runs
    run, other = paused(), paused()
    with _client(server) as c:
        form = _form(c.get(f"/runs/{run}").text)
        other_form = _form(c.get(f"/runs/{other}").text)
        for data in ({"version": form["version"]},  # no token
                     {**form, "csrf": form["csrf"][:-1] + "0"},  # tampered
                     {**form, "csrf": other_form["csrf"]}):  # another run's page  # fmt: skip
            r = c.post(f"/runs/{run}/approve", data=data)
            assert r.status_code == 403 and "security token" in r.text
        r = c.post(f"/runs/{run}/reject", data={"version": form["version"], "feedback": "min_psnr=40"})
        assert r.status_code == 403
        # Another browser (no session cookie of this page) cannot replay the token either.
        with _client(server) as stranger:
            assert stranger.post(f"/runs/{run}/approve", data=form).status_code == 403
        # A cross-site page posting through the reviewer's browser carries its own Origin.
        r = c.post(f"/runs/{run}/approve", data=form, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "another site" in r.text
    assert not (runs_dir / run / "plan.json").exists()
    with _client(server) as c:
        assert "awaiting approval" in c.get(f"/runs/{run}").text


def test_traversal_and_unknown_run_ids_get_404(runs, server, tmp_path):
    runs_dir, _ = runs
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (runs_dir / "sneaky").symlink_to(outside)  # a run folder that points out of the runs folder
    paths = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", ".hidden", "nope", "sneaky", "a%00b", "x" * 300]
    host, port = server.removeprefix("http://").split(":")

    def raw(method: str, path: str) -> tuple[int, str]:
        # http.client sends the path as written (httpx would normalise "/runs/.." to "/").
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            body = "csrf=x" if method == "POST" else None
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    for p in paths:
        for suffix in ("", "/report", "/plan.json", "/progress.json"):
            status, text = raw("GET", f"/runs/{p}{suffix}")
            assert status == 404 and "root:" not in text, (p, suffix, status)
        assert raw("POST", f"/runs/{p}/approve")[0] == 404, p
        assert raw("POST", f"/runs/{p}/reject")[0] == 404, p


def test_two_approvals_at_once_one_wins_and_the_other_is_told(runs, server):
    runs_dir, paused = runs
    run = paused()
    clients = [_client(server), _client(server)]
    forms = [_form(c.get(f"/runs/{run}").text) for c in clients]
    answers: list = [None, None]
    go = threading.Barrier(2)

    def approve(i: int) -> None:
        go.wait()
        answers[i] = clients[i].post(f"/runs/{run}/approve", data={**forms[i], "name": f"reviewer {i}"})

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [303, 409], [(a.status_code, a.text[:300]) for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert "already being decided" in loser.text and "approving" in loser.text
    _wait_for(lambda: (runs_dir / run / "plan.json").is_file(), what="the plan")
    winner = answers.index(next(a for a in answers if a.status_code == 303))
    plan = json.loads((runs_dir / run / "plan.json").read_text())
    assert plan["approval"]["approved_by"] == f"reviewer {winner} (sol serve)"
    # After the fact, the same stale page is told the run is decided.
    _wait_for(lambda: "done" in clients[0].get(f"/runs/{run}/progress.json").json()["state"], what="done")
    r = clients[1 - winner].post(f"/runs/{run}/approve", data=forms[1 - winner])
    assert r.status_code == 409 and "not waiting for approval" in r.text
    for c in clients:
        c.close()


def test_reject_with_feedback_resumes_the_integrator_and_shows_its_progress(runs, server):
    runs_dir, paused = runs
    run = paused()
    with _client(server) as c:
        form = _form(c.get(f"/runs/{run}").text)
        r = c.post(f"/runs/{run}/reject", data={**form, "feedback": "too blurry", "min_psnr": "40"})
        assert r.status_code == 303
        page = c.get(r.headers["location"]).text
        assert 'http-equiv="refresh"' in page  # it follows the new round by itself
        _wait_for(lambda: (runs_dir / run / "candidates-2.json").is_file(), what="round 2")
        _wait_for(
            lambda: c.get(f"/runs/{run}/progress.json").json()["state"] == "awaiting approval", what="pause"
        )
        prog = c.get(f"/runs/{run}/progress.json").json()
        agents = {a["agent"]: a for a in prog["agents"]}
        assert agents["integrator-2"]["state"] == "done" and agents["integrator-2"]["done"] >= 1
        html = c.get(f"/runs/{run}").text
        assert "Rejected by sol serve" in html and 'value="candidates-2.json"' in html
        # The page from round 1 is stale now: its decision is refused, not applied to round 2.
        r = c.post(f"/runs/{run}/approve", data=form)
        assert r.status_code == 409 and "changed since the page was shown" in r.text
    state = json.loads((runs_dir / run / "candidates-2.json").read_text())
    assert state["budget"]["min_psnr"] == 40.0


def test_default_bind_is_loopback_and_other_addresses_need_a_token(runs, server, capsys, monkeypatch):
    import signal

    import sol.review.app
    from sol.cli import build_parser, main
    from sol.review.security import host_allowed

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    monkeypatch.delenv("SOL_REVIEW_TOKEN", raising=False)
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own; put pytest's back after
    served: dict = {}
    # In-process (a subprocess costs ~20 s of imports here): `sol serve` as typed, up to uvicorn's
    # start, which gets the socket serve_cmd bound and listens on it. The app itself runs in `server`.
    monkeypatch.setattr(sol.review.app, "serve", lambda app, sock: served.update(app=app, sock=sock))
    try:
        for extra, message in ((["--host", "0.0.0.0"], "would let other machines approve plans"),
                               (["--host", "0.0.0.0", "--token", "short"], "at least 16 characters")):  # fmt: skip
            with pytest.raises(SystemExit) as exit_:  # refused before anything listens
                main(["serve", "--runs-dir", str(runs[0]), *extra])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err
            assert not served
        # Started with no options: it listens on 127.0.0.1 only.
        main(["serve", "--runs-dir", str(runs[0]), "--port", "0"])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    sock = served["sock"]
    try:
        port = sock.getsockname()[1]
        assert f"http://127.0.0.1:{port}/" in capsys.readouterr().out
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        # Columns: state, recv-q, send-q, local address, peer address ("0.0.0.0:*" for any listener).
        assert [line.split()[3] for line in out.splitlines()] == [f"127.0.0.1:{port}"], out
    finally:
        sock.close()
    with _client(server) as c:
        assert c.get("/healthz").json() == {"ok": True}
        # A page that rebinds its own DNS name to 127.0.0.1 still sends its own Host: refused.
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert host_allowed("localhost:8765", "127.0.0.1", False) and host_allowed("[::1]:80", "::1", False)
    assert not host_allowed("sol.example:8765", "127.0.0.1", False) and host_allowed(
        "sol.example", "0.0.0.0", True
    )


def test_an_access_token_guards_every_request(runs):
    token = "t0ken-of-at-least-16-chars"
    with running(create_app(runs[0], access_token=token)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/").status_code == 401 and c.get("/healthz").status_code == 401
        assert c.get("/?token=wrong-token-wrong-token").status_code == 401
        r = c.get(f"/?token={token}")
        assert r.status_code == 303 and r.headers["location"] == "/"  # the token leaves the address bar
        assert c.get("/").status_code == 200  # the cookie stands for it from now on
        with httpx.Client(base_url=url, timeout=60) as script:
            assert script.get("/healthz", headers={"Authorization": f"Bearer {token}"}).status_code == 200
