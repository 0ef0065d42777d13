"""The review app's guards: run ids, the access token, per-page CSRF tokens, allowed hosts.

The threat model (docs/review.md, "Security"): the app changes state (an approval exports a plan that
inference servers will load), so

- it binds 127.0.0.1 unless told otherwise, and any other address needs an access token;
- a web page the reviewer happens to have open elsewhere must not be able to approve through the
  reviewer's browser: every state-changing request carries a CSRF token that was issued with the page
  it comes from, bound to the run, to the browser's session cookie and to a time window, and a
  cross-site ``Origin`` is refused; on loopback, ``Host`` must name loopback (no DNS rebinding);
- run ids come from URLs: only a run folder's own name is accepted (no separators, no ``..``), and the
  folder must lie directly in the runs folder; anything else is a 404, like a run that does not exist.

>>> valid_run_id("sol-tiny-wan-20261129-083130"), valid_run_id("../etc")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from pathlib import Path

# A run folder's name as ``sol.agent.runs.new_run_dir`` makes it: letters, digits, '.', '-', '_'.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CSRF_TTL_S = 12 * 3600.0  # a page left open over a working day still works
MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "sol_session"
ACCESS_COOKIE = "sol_access"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def valid_run_id(run_id: str) -> bool:
    """A plain folder name: no path separators, no ``..``, nothing hidden."""
    return bool(RUN_ID.fullmatch(run_id)) and ".." not in run_id


def run_dir_for(runs_dir: Path, run_id: str) -> Path | None:
    """The run folder ``runs_dir/run_id`` when ``run_id`` is valid and names a run there, else None.

    The resolved folder must sit directly in the resolved ``runs_dir``: a symlinked run folder that
    points elsewhere is refused too.
    """
    if not valid_run_id(run_id):
        return None
    root = runs_dir.resolve()
    cand = (runs_dir / run_id).resolve()
    if cand.parent != root or not (cand / "run.json").is_file():
        return None
    return cand


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``… (a name other than localhost is never assumed loopback)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh access token (e.g. for ``sol serve --host 0.0.0.0 --token …``)."""
    return secrets.token_urlsafe(24)


class Guard:
    """Signs and checks CSRF tokens and the access cookie with a secret made at start-up.

    >>> g = Guard(access_token=None)
    >>> t = g.csrf_token("run-1", "session-a")
    >>> g.check_csrf(t, "run-1", "session-a"), g.check_csrf(t, "run-2", "session-a")
    (True, False)
    """

    def __init__(self, access_token: str | None, secret: bytes | None = None):
        self.secret = secret or secrets.token_bytes(32)
        self.access_token = access_token

    def _sign(self, *parts: str) -> str:
        msg = "\x1f".join(parts).encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:40]

    # --- CSRF: one token per rendered page, bound to the run, the session and a time window ---------
    def csrf_token(self, run_id: str, session: str) -> str:
        nonce, ts = secrets.token_hex(8), str(int(time.time()))
        return f"{nonce}.{ts}.{self._sign('csrf', run_id, session, nonce, ts)}"

    def check_csrf(self, token: str | None, run_id: str, session: str | None) -> bool:
        if not token or not session:
            return False
        try:
            nonce, ts, sig = token.split(".")
            age = time.time() - int(ts)
        except ValueError:
            return False
        if not 0 <= age <= CSRF_TTL_S:
            return False
        return hmac.compare_digest(sig, self._sign("csrf", run_id, session, nonce, ts))

    # --- the access token (only when one is configured) ---------------------------------------------
    def access_cookie(self) -> str:
        """The cookie value that stands for the access token (the token itself never sits in a cookie)."""
        return self._sign("access", self.access_token or "")

    def token_ok(self, presented: str | None) -> bool:
        return (
            bool(self.access_token)
            and bool(presented)
            and hmac.compare_digest(presented.encode(), self.access_token.encode())
        )

    def cookie_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value, self.access_cookie())


def host_allowed(host_header: str | None, bind_host: str, token_required: bool) -> bool:
    """On loopback without a token, the ``Host`` header must name loopback: a page on another site
    cannot reach the app through a DNS name rebound to 127.0.0.1. With a token, any host is fine
    (the token is what protects)."""
    if token_required:
        return True
    if not host_header:
        return False
    name = (
        host_header.rsplit(":", 1)[0] if not host_header.startswith("[") else host_header.split("]")[0] + "]"
    )
    return name.lower() in LOOPBACK_NAMES or is_loopback(name)


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """A POST's ``Origin`` (browsers send it) must be this server. Absent (curl, scripts) passes here and
    the CSRF token decides; ``null`` (a sandboxed or privacy-stripped context) is refused."""
    if origin is None:
        return True
    if origin == "null" or not host_header:
        return False
    return origin.split("://", 1)[-1].lower() == host_header.lower()
