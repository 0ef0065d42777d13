"""The review web app (``sol serve``): runs, their reports, and the approve / reject decision.

The interfaces layer: it reads run folders through ``sol.agent`` and decides through
``sol.agent.driver.approve`` / ``reject``, as the CLI does. Needs the optimize extra (FastAPI, uvicorn).

>>> from sol.review import create_app, serve  # doctest: +SKIP
>>> serve(create_app(Path("runs")), "127.0.0.1", 8765)  # doctest: +SKIP
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy: `import sol.review.security` must not need FastAPI.
    if name in ("create_app", "serve", "check_bind"):
        from sol.review import app

        return getattr(app, name)
    raise AttributeError(name)
