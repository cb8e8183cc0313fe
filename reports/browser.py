"""Headless Chromium through Playwright, offline: for browser tests and report screenshots.

Debian's ``chromium`` (``/usr/bin/chromium``) is driven directly; ``playwright install`` is never
needed (it downloads browsers). Every request that is not ``file:`` or ``data:`` is aborted and
recorded, so a page that tries to reach the network is caught.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mganprior.core.errors import InputError

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> Path | None:
    found = Path("/usr/bin/chromium")
    if found.is_file():
        return found
    other = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(other) if other else None


@dataclass
class PageLog:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    blocked: list[str] = field(default_factory=list)  # network requests that were refused


@contextlib.contextmanager
def open_page(html: str | Path, width: int = 1200, height: int = 900) -> Iterator[tuple]:
    """``(page, log)`` for an HTML file, offline; the browser always closes."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise InputError("no chromium found (/usr/bin/chromium); install it with "
                         "apt-get install chromium")
    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: log.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.errors.append(str(e)))

            def route(request_route):
                if request_route.request.url.startswith(("file://", "data:")):
                    request_route.continue_()
                else:
                    log.blocked.append(request_route.request.url)
                    request_route.abort()

            page.route("**/*", route)
            page.goto(Path(html).resolve().as_uri())
            yield page, log
        finally:
            browser.close()
