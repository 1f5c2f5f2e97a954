"""Browser tests: Playwright for Python driving Debian's Chromium, never a downloaded browser:
its headless shell by default (``BROWSER_TESTS_CHROMIUM`` names another, browser.mk says why),
the full browser for a module that sets ``BROWSER = FULL_CHROMIUM`` (what depends on the
desktop browser's defaults, such as blocking third-party cookies in a fresh profile).

One Chromium per test module (and pytest-xdist worker), one fresh context (cookies, storage) per
test. Every test leaves a screenshot in ``test-artifacts/browser/``; a failed one also leaves the
page's HTML (and its frames'), the browser console, and the orchestrators' logs there.

Without Chromium or Playwright the tests are skipped, except in CI (``CI=true``), where that is
a failure: ``make browser-deps`` installs both.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.ui import ARTIFACTS, CONTEXT_OPTIONS, Shots
from tests.support.asset_copies import AssetCopies
from tests.support.orchestrator import Orchestrator
from tests.support.quix_portal import FakeQuixPortal
from tests.support.wheels import build_wheel

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path(os.environ.get("BROWSER_TESTS_CHROMIUM", "/usr/bin/chromium-headless-shell"))
FULL_CHROMIUM = Path(os.environ.get("BROWSER_TESTS_FULL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    message = f"{reason}; run `make browser-deps`"
    if _in_ci():
        pytest.fail(f"browser tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


BROWSER_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here drives Chromium: marked ``browser`` (``-m "not browser"`` leaves them)."""
    for item in items:
        if BROWSER_TESTS in item.path.parents:
            item.add_marker(pytest.mark.browser)


def artifact_name(node_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = [getattr(request.node, f"rep_{when}", None) for when in ("setup", "call")]
    return any(report is not None and report.failed for report in reports)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One Chromium per test module (the module's ``BROWSER``, else :data:`CHROMIUM`). Not per
    session: Playwright's sync API keeps an event loop running in the main thread while it is
    open, which would break every later test that runs its own loop (asyncio.run) in the same
    pytest process."""
    executable = Path(getattr(request.module, "BROWSER", CHROMIUM))
    if not executable.exists():
        _unavailable(f"no Chromium at {executable}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(
    browser: Any, orchestrator: Callable[..., Orchestrator], request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A fresh browser context; torn down (and photographed) before any orchestrator stops."""
    context = browser.new_context(**CONTEXT_OPTIONS)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    console: list[str] = []
    own_errors: list[str] = []  # uncaught errors in the orchestrator's own pages

    def on_page_error(error: Any) -> None:
        console.append(f"[pageerror] {error}\n{error.stack}")
        if "/-/static/" in (error.stack or ""):
            own_errors.append(f"{error}\n{error.stack}")

    tab.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    tab.on("pageerror", on_page_error)
    stem = artifact_name(request.node.name)
    for pattern in (f"{stem}.*", f"{stem}--*"):
        for old in ARTIFACTS.glob(pattern):
            old.unlink()
    yield tab
    try:
        try:
            tab.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
        except Exception as error:  # a crashed page: still keep what follows
            console.append(f"[screenshot failed] {error}")
        if _failed(request):
            parts = [f"<!-- {tab.url} -->\n{tab.content()}"]
            for frame in tab.frames[1:]:
                try:
                    parts.append(f"\n<!-- frame {frame.url} -->\n{frame.content()}")
                except Exception as error:  # a frame that navigates away meanwhile
                    parts.append(f"\n<!-- frame {frame.url}: {error} -->")
            (ARTIFACTS / f"{stem}.html").write_text("".join(parts), encoding="utf-8")
            (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(console), encoding="utf-8")
    finally:
        context.close()
    if own_errors:
        pytest.fail("uncaught errors in the loading or sign-in page:\n" + "\n".join(own_errors))


@pytest.fixture
def shots(page: Any, request: pytest.FixtureRequest) -> Shots:
    return Shots(page, artifact_name(request.node.name))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The browser tests' index: a requirement, and a package the notebooks import unasked."""
    directory = tmp_path_factory.mktemp("browser-wheels")
    build_wheel(directory, "orch-alpha", "1.0")
    build_wheel(
        directory,
        "orch-cowsay",
        "1.0",
        module_source="def say(text):\n    return 'the cow says ' + text\n",
    )
    return directory


@pytest.fixture(scope="session")
def asset_copies(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> AssetCopies:
    """The run's pool of compressed assets, shared by its pytest-xdist workers."""
    run = tmp_path_factory.getbasetemp()
    return AssetCopies((run.parent if worker_id != "master" else run) / "marimo-asset-copies")


@pytest.fixture
def prepare_volume(
    asset_copies: AssetCopies, request: pytest.FixtureRequest
) -> Callable[[Path], None] | None:
    """A browser test's volume starts with the compressed assets earlier tests made, unless its
    module sets ``FRESH_ASSET_COPIES`` (first visits to a fresh volume)."""
    return None if getattr(request.module, "FRESH_ASSET_COPIES", False) else asset_copies.seed


@pytest.fixture
def orchestrator(
    orchestrator: Callable[..., Orchestrator],
    asset_copies: AssetCopies,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Orchestrator]]:
    """The suite's factory; a failed test also leaves the orchestrators' logs in the artifacts,
    and every test gives the pool the compressed assets its volumes gained."""
    started: list[Orchestrator] = []

    def start(*args: Any, **kwargs: Any) -> Orchestrator:
        process = orchestrator(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        asset_copies.harvest(process.state_dir)
    if _failed(request):
        stem = artifact_name(request.node.name)
        for number, process in enumerate(started):
            shutil.copyfile(process.log_path, ARTIFACTS / f"{stem}.orchestrator-{number}.log")


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        yield fake
