"""The pytest plugin: a `dynosim_app` fixture that runs an app the way Heroku would.

    def test_counts_survive_a_restart(dynosim_app):
        app = dynosim_app("path/to/app", addons=["heroku-postgresql"])
        app.post("/notes", {"body": "hello"})
        app.restart()
        assert "hello" in app.get("/notes").text

Each test gets its own copy of the app (so its own `.dynosim/` state and add-on data) and its
own ports, which keeps tests independent under pytest-xdist. `share_state=True` runs the app
folder itself, so its add-ons and their data are shared by the tests that ask for it.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def dynosim_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    from .api import App

    started: list[App] = []

    def factory(path: str | Path, *, share_state: bool = False, **options: Any) -> App:
        source = Path(path)
        if share_state:
            folder = source
        else:
            folder = tmp_path_factory.mktemp("dynosim-app") / source.name
            shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".dynosim", "__pycache__", ".git"))
        app = App(folder, **options)
        app.start()
        started.append(app)
        return app

    yield factory
    for app in reversed(started):
        app.stop()
