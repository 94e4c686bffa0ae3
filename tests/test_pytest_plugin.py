"""The pytest plugin as a suite uses it, in a real inner pytest session (pytester) that runs a tiny app:
the marker, the fixture typed as dynosim.App, the session-scoped run, and the add-on backend option."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CACHE_DIR, FIXTURES

pytest_plugins = ["pytester"]

MARKED = """
import pytest

import dynosim

pytestmark = pytest.mark.dynosim(app="app", formation="web=1")


def test_the_marker_s_app_is_started(dynosim_marked_app: dynosim.App):
    assert isinstance(dynosim_marked_app, dynosim.App)
    assert dynosim_marked_app.get("/").json()["dyno"] == "web.1"
    assert dynosim_marked_app.options.addons_backend == "{backend}"


@pytest.mark.dynosim(formation="web=2")
def test_the_nearest_marker_wins(dynosim_marked_app):
    assert dynosim_marked_app.dynos() == {{"web.1": "up", "web.2": "up"}}
"""

SESSION = """
seen = []


def test_first(dynosim_app_session):
    app = dynosim_app_session("app")
    seen.append((app, app.get("/").json()["pid"]))


def test_second_shares_the_run(dynosim_app_session):
    app = dynosim_app_session("app")
    assert seen and seen[0][0] is app and app.get("/").json()["pid"] == seen[0][1]  # the same web.1, still up


def test_an_unmarked_test_must_name_its_app(dynosim_app):
    dynosim_app()
"""


Inner = Callable[..., pytest.RunResult]


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inner]:
    """`inner(ini, {module: source}, *args)`: an inner pytest session beside a copy of the tiny app."""
    monkeypatch.setenv("DYNOSIM_CACHE_DIR", str(CACHE_DIR))
    app = pytester.path / "app"
    shutil.copytree(FIXTURES / "dynolab", app)
    (app / "Procfile").write_text("web: python server.py\n")
    # the inner session's copies of the app need a path short enough for their control socket (108 bytes)
    short = Path(tempfile.mkdtemp(prefix="dynosim-plugin-"))

    def run(ini: str, modules: dict[str, str], *args: str) -> pytest.RunResult:
        pytester.makeini("[pytest]\n" + ini)
        pytester.makepyfile(**modules)
        return pytester.runpytest_subprocess("-p", "no:xdist", f"--basetemp={short / 'inner'}", *args)

    yield run
    shutil.rmtree(short, ignore_errors=True)


def test_marker_typed_fixture_session_run_and_addopts_beating_the_ini(inner: Inner) -> None:
    ini = "addopts = --dynosim-addons native\ndynosim_addons = docker\n"
    result = inner(ini, {"test_marked": MARKED.format(backend="native"), "test_session": SESSION})
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*dynosim: which app? pass its folder*@pytest.mark.dynosim(app='path/to/app')*"])


def test_the_ini_option_alone(inner: Inner) -> None:
    first_test = MARKED.format(backend="native").split("@pytest.mark.dynosim(formation")[0]
    inner("dynosim_addons = native\n", {"test_marked": first_test}).assert_outcomes(passed=1)


def test_a_wrong_backend_stops_the_session(inner: Inner) -> None:
    nothing = {"test_nothing": "def test_nothing():\n    pass\n"}
    result = inner("dynosim_addons = podman\n", nothing)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*dynosim_addons = 'podman' in the ini file: use one of auto, docker, native*"])
    result = inner("", nothing, "--dynosim-addons", "podman")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dynosim-addons: invalid choice: 'podman'*"])
