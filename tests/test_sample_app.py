"""The README's sample app, run the way the README runs it: Flask on gunicorn, a release phase,
Heroku Postgres. Also the README's example test: data kept across a dyno restart."""

from __future__ import annotations

import re

from conftest import CACHE_DIR, FIXTURES


def visits(page: str) -> int:
    match = re.search(r"<strong id=visits>(\d+)</strong>", page)
    assert match, page
    return int(match.group(1))


def test_the_sample_app_keeps_its_data_across_a_restart(dynosim_app):
    app = dynosim_app(FIXTURES / "sample", addons_backend="native", cache_dir=CACHE_DIR)
    first = visits(app.get("/").text)
    assert "Hello from web.1" in app.get("/").text
    app.restart()  # every dyno, each on a fresh filesystem
    assert visits(app.get("/").text) == first + 2  # the count lives in Postgres, outside every dyno
    assert app.addon_urls["DATABASE_URL"].startswith("postgres://")
    assert app.logs.search(r"app\[release\.\d{4}\]: release phase in release\.\d{4}: database migrated")
    assert app.logs.search(r"app\[web\.1\]: .*Booting worker with pid")  # the real gunicorn
