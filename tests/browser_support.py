"""Fixtures for tests that drive the real workbench in a real headless Chromium.

tests/conftest.py loads this module as a pytest plugin, so any test can ask for the fixtures by name
(importing them into a test module would start a second session browser):

    from tests.browser_support import ARTIFACTS

    @pytest.mark.browser
    def test_something(workbench, browser_page, store):
        url = workbench(store.path)               # starts `streamlit run app.py` on a free port
        browser_page.goto(url + "/Datasets")      # a Playwright Page (Debian chromium, no download)
        ...
        browser_page.screenshot(path=ARTIFACTS / "something.png")

`workbench(store_path, app="app.py")` may be called several times in one test; every server it starts
is killed (whole process group) at teardown. `wait = workbench.launch(store_path)` starts the server at
once and `wait()` gives its URL: a test that builds its store in between overlaps the server's start. `module_workbench` is the same factory for the tests of one
module that only read a module-scoped store: they share one server. `browser_page` records JavaScript dialogs in
`browser_page.dialogs` (a list of messages) and dismisses them, so a test can assert that none fired.
Both skip with a clear message where /usr/bin/chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
# The Contamination page's "Flagged samples (N)" subheader, case-sensitive and whole: a plain
# get_by_text("Flagged samples") also matches the per-set table's hidden "flagged samples" column header,
# which comes first in the page and never becomes visible (a wait on it times out).
FLAGGED_HEADING = re.compile(r"^Flagged samples \(\d+\)$")
CHROMIUM = Path(os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT = 90.0  # seconds; the 2-core CI machine is shared and Streamlit's first import is slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _streamlit_bin() -> str:
    venv = ROOT / ".venv" / "bin" / "streamlit"
    return str(venv) if venv.exists() else "streamlit"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen, *, graceful: bool = True) -> None:
    """Stop a server and what it started (its own process group). `graceful=False` kills at once: the test
    fixtures' servers work on temporary stores, and Streamlit's shutdown plus the interpreter's exit cost
    1-5 s per server on the 2-core CI machine."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


def launch_workbench(store_path: str | Path, log_path: Path, *, app: str = "app.py",
                     flags: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start `streamlit run app` on a free localhost port against `store_path`, without waiting for it.
    `flags` are extra `--section.option value` settings (the rest comes from .streamlit/config.toml).
    Nothing opens the store before a page is requested, so the store may be built while the server starts."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ASSAY_DB=str(store_path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    cmd = [_streamlit_bin(), "run", app, "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.runOnSave", "false", "--server.fileWatcherType", "none", *flags]
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the process is stopped
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_file = log  # type: ignore[attr-defined]
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc, url


def wait_healthy(proc: subprocess.Popen, url: str) -> str:
    """Wait until a launched server answers its health check; its URL."""
    log, log_path = proc.log_file, proc.log_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        if _healthy(url):
            return url
        time.sleep(0.3)
    _stop(proc)
    log.close()
    raise RuntimeError(f"streamlit did not become healthy in {STARTUP_TIMEOUT:.0f}s:\n{log_path.read_text(errors='replace')}")


def start_workbench(store_path: str | Path, log_path: Path, *, app: str = "app.py",
                    flags: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start `streamlit run app` on a free localhost port against `store_path`; wait until healthy."""
    proc, url = launch_workbench(store_path, log_path, app=app, flags=flags)
    return proc, wait_healthy(proc, url)


class _Servers:
    """The workbench servers one fixture started; `stop()` kills them all (whole process groups).

    Called, it starts a server and waits for it (the URL); `launch` starts one now and returns a function
    that waits for it, so that a test builds its store while the server imports (seconds on 2 cores)."""

    def __init__(self, log_dir: Path, *, reuse: bool) -> None:
        self.log_dir, self.reuse = log_dir, reuse
        self.started: dict[tuple, tuple[subprocess.Popen, str]] = {}

    def launch(self, store_path: str | Path, app: str = "app.py", flags: tuple[str, ...] = ()) -> Callable[[], str]:
        key = (str(Path(store_path).resolve()), app, tuple(flags)) if self.reuse else (len(self.started),)
        if key not in self.started:
            log = self.log_dir / f"streamlit-{len(self.started)}.log"
            self.started[key] = launch_workbench(store_path, log, app=app, flags=flags)
        proc, url = self.started[key]
        return lambda: wait_healthy(proc, url)

    def __call__(self, store_path: str | Path, app: str = "app.py", flags: tuple[str, ...] = ()) -> str:
        return self.launch(store_path, app, flags)()

    def stop(self) -> None:
        for proc, _url in self.started.values():
            _stop(proc, graceful=False)
            proc.log_file.close()  # type: ignore[attr-defined]


@pytest.fixture
def workbench(tmp_path: Path) -> Iterator[_Servers]:
    """A factory: `workbench(store_path, app="app.py", flags=()) -> base URL` of a live workbench server;
    `workbench.launch(store_path)` starts one before its store is built and returns `wait() -> base URL`."""
    servers = _Servers(tmp_path, reuse=False)
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def module_workbench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    """Like `workbench`, for the tests of one module that only read a module-scoped store: a second call with
    the same store, app and flags returns the server already running (a start and its first page imports
    cost seconds on the 2-core CI machine); the servers stop when the module is done."""
    servers = _Servers(tmp_path_factory.mktemp("workbench"), reuse=True)
    yield servers
    servers.stop()


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`) to run browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is missing (pip install playwright; no browser download)")


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[object]:
    """The session's one Playwright driver: a second `sync_playwright()` in a process where one runs fails
    ("Sync API inside the asyncio loop"), so a test that needs its own browser launches it from this one."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def chromium_browser(playwright_driver) -> Iterator[object]:
    """One headless Debian Chromium for the whole session."""
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def browser_page(chromium_browser) -> Iterator[object]:
    """A fresh page (own context) 1400x1000; `page.dialogs` lists every JS dialog that fired."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog) -> None:
        page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        context.close()


_IDLE = ("() => document.querySelector('[data-test-script-state]')?.getAttribute('data-test-script-state') "
         "=== 'notRunning'")


def wait_idle(page: object) -> None:
    """Wait until the Streamlit script is not running: input given in the middle of a rerun can be lost
    (a dropdown opened just before the rerun redraws it closes again)."""
    page.wait_for_function(_IDLE)


def choose_option(page: object, widget: object, name: str, *, attempts: int = 4) -> None:
    """Open a Streamlit select/multiselect and click the option `name`.

    On a loaded 2-core machine a rerun can redraw the widget just after the click, closing the
    dropdown before the option is shown; so wait for idle, open, and retry a few times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        wait_idle(page)
        widget.click()
        option = page.get_by_role("option", name=name, exact=True)
        try:
            option.wait_for(timeout=10_000)
            option.click()
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
