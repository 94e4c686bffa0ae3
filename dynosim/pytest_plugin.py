"""The pytest plugin: fixtures that run an app the way Heroku would.

    def test_counts_survive_a_restart(dynosim_app):
        app = dynosim_app("path/to/app", addons=["heroku-postgresql"])
        app.post("/notes", {"body": "hello"})
        app.restart()
        assert "hello" in app.get("/notes").text

    @pytest.mark.dynosim(app="path/to/app", addons=["heroku-postgresql"], formation="web=1")
    def test_home(dynosim_marked_app: dynosim.App):
        assert dynosim_marked_app.get("/").status == 200

Each test gets its own copy of the app (so its own `.dynosim/` state and add-on data) and its
own ports, which keeps tests independent under pytest-xdist. `share_state=True` runs the app
folder itself, so its add-ons and their data are shared by the tests that ask for it.
`dynosim_app_session` starts one run per app and options for the whole session (per xdist
worker), shared by every test that asks for it, and stops it when the session ends; `dynosim_clean`
resets those apps' add-ons before a test (`App.reset()`: Postgres as the release phase left it, in
milliseconds, the app's connections kept; Redis, search and mail empty):

    @pytest.fixture(scope="session")
    def app(dynosim_app_session):
        return dynosim_app_session("path/to/app", addons=["heroku-postgresql"])

    def test_signup(app, dynosim_clean):
        assert app.post("/signup", {"email": "a@example.com"}).status == 302

Faults (dynosim/faults): `dynosim_faults` is the marked app's `App.faults`, every fault cleared after
the test; `@pytest.mark.dynosim_fault(kind, target, seconds=…, probability=…, …)` switches one on as
soon as the test's app (dynosim_app's or dynosim_marked_app's) has started, one marker per fault:

    @pytest.mark.dynosim(app="path/to/app", addons=["heroku-postgresql"])
    @pytest.mark.dynosim_fault("addon-latency", "heroku-postgresql", latency=0.5)
    def test_slow_database(dynosim_marked_app, dynosim_faults):
        assert dynosim_marked_app.get("/").status == 200
        with dynosim_faults.dyno_crash("web.1"): ...

Where add-ons are created (`addons_backend`): the test's own argument or marker, else
`--dynosim-addons auto|docker|native` (addopts-able), else the ini option `dynosim_addons`, else auto.
A marker's `app` is relative to pytest's rootdir.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from .api import App
    from .faults.client import AppFaults

BACKENDS = ("auto", "docker", "native")
MARKER = "dynosim"
FAULT_MARKER = "dynosim_fault"


class AppFactory(Protocol):
    def __call__(self, path: str | Path | None = None, *, share_state: bool = False, **options: Any) -> App: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynosim")
    group.addoption(
        "--dynosim-addons",
        choices=BACKENDS,
        default=None,
        help="Where the dynosim fixtures create add-ons (default: the dynosim_addons ini option, else auto).",
    )
    parser.addini(
        "dynosim_addons",
        f"Where the dynosim fixtures create add-ons: {', '.join(BACKENDS)} (default: auto).",
        default="auto",
    )


def pytest_configure(config: pytest.Config) -> None:
    _backend(config)  # a wrong ini value stops the session before any test, not in each fixture
    config.addinivalue_line(
        "markers",
        f"{MARKER}(app=PATH, addons=[...], formation=..., **options): the app (relative to the rootdir) and "
        "dynosim.App options the dynosim fixtures of this test start by default",
    )
    config.addinivalue_line(
        "markers",
        f"{FAULT_MARKER}(kind, target=None, seconds=..., probability=..., latency=..., status=..., code=..., "
        "seed=...): a fault switched on once the test's dynosim app has started",
    )


def _backend(config: pytest.Config) -> str:
    chosen = config.getoption("--dynosim-addons") or config.getini("dynosim_addons") or "auto"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"dynosim_addons = {chosen!r} in the ini file: use one of {', '.join(BACKENDS)}")
    return str(chosen)


def _marked(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The test's @pytest.mark.dynosim(...) keywords (nearest marker first), its `app` made absolute."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER}: pass keywords only, e.g. {MARKER}(app='path/to/app')")
        options.update(marker.kwargs)
    if "app" in options:
        options["app"] = request.config.rootpath / options["app"]
    return options


def _start(folder_for: Callable[[], Path], path: str | Path, share_state: bool, options: dict[str, Any]) -> App:
    from .api import App

    source = Path(path)
    if share_state:
        folder = source
    else:
        folder = folder_for() / source.name
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".dynosim", "__pycache__", ".git"))
    app = App(folder, **options)
    app.start()
    return app


def _options(
    config: pytest.Config, marked: dict[str, Any], path: str | Path | None, given: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    options = {"addons_backend": _backend(config), **marked, **given}
    app = path if path is not None else options.get("app")
    options.pop("app", None)
    if app is None:
        pytest.fail(
            "dynosim: which app? pass its folder, dynosim_app('path/to/app'), or mark the test "
            f"@pytest.mark.{MARKER}(app='path/to/app')",
            pytrace=False,
        )
    return Path(app), options


@pytest.fixture
def dynosim_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppFactory]:
    """Start an app for this test: `dynosim_app(path, **App options)`; with no path, the marker's."""
    started: list[App] = []
    marked = _marked(request)

    def factory(path: str | Path | None = None, *, share_state: bool = False, **given: Any) -> App:
        folder, options = _options(request.config, marked, path, given)
        app = _start(lambda: tmp_path_factory.mktemp("dynosim-app"), folder, share_state, options)
        started.append(app)
        _switch_on_marked_faults(request, app)
        return app

    yield factory
    for app in reversed(started):
        app.stop()


@pytest.fixture
def dynosim_marked_app(dynosim_app: AppFactory) -> App:
    """The app of the test's @pytest.mark.dynosim(app=..., ...), started, stopped after the test."""
    return dynosim_app()


def _switch_on_marked_faults(request: pytest.FixtureRequest, app: App) -> None:
    """The test's @pytest.mark.dynosim_fault(...)s, outermost first, on the app that has just started."""
    for marker in reversed(list(request.node.iter_markers(FAULT_MARKER))):
        if not marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.{FAULT_MARKER}: name the kind first, e.g. {FAULT_MARKER}('dyno-crash', 'web.1')"
            )
        app.faults.add(*marker.args, **marker.kwargs)


@pytest.fixture
def dynosim_faults(dynosim_marked_app: App) -> Iterator[AppFaults]:
    """The marked app's faults (`App.faults`): `dynosim_faults.addon_outage("heroku-postgresql", seconds=5)`;
    every fault still on is cleared after the test."""
    from .errors import DynosimError

    faults = dynosim_marked_app.faults
    yield faults
    try:
        faults.clear()
    except DynosimError:  # the test stopped its app: nothing is on
        pass


class SessionApps:
    """`dynosim_app_session`: one run per app and options, started at first use, for the whole session."""

    def __init__(self, config: pytest.Config, folder_for: Callable[[], Path]) -> None:
        self.config = config
        self.folder_for = folder_for
        self.runs: dict[tuple[Path, bool, str], App] = {}

    def __call__(self, path: str | Path | None = None, *, share_state: bool = False, **given: Any) -> App:
        folder, options = _options(self.config, {}, path, given)
        key = (folder.resolve(), share_state, repr(sorted(options.items())))
        if key not in self.runs:
            self.runs[key] = _start(self.folder_for, folder, share_state, options)
        return self.runs[key]


@pytest.fixture(scope="session")
def dynosim_app_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionApps]:
    """Like dynosim_app, but one run per app and options for the session, shared by the tests that ask."""
    apps = SessionApps(request.config, lambda: tmp_path_factory.mktemp("dynosim-session-app"))
    yield apps
    for app in reversed(list(apps.runs.values())):
        app.stop()


@pytest.fixture
def dynosim_clean(dynosim_app_session: SessionApps) -> None:
    """Clean data for this test: every app dynosim_app_session has started is reset (`App.reset()`:
    Postgres back to its state after the release phase, Redis, search and mail empty) before it runs.
    An app started later in the test is fresh anyway."""
    for app in dynosim_app_session.runs.values():
        app.reset()
