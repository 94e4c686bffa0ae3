"""`dynosim ps:stop DYNO`: a formation dyno is stopped and comes back, as the formation still asks for it."""

from __future__ import annotations

import urllib.request

from conftest import make_app, run_dynosim

UP = r"heroku\[web\.1\]: State changed from starting to up"


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


def test_a_stopped_formation_dyno_comes_back(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    run.wait_for(UP)
    get(run.port, "/write/marker")
    assert get(run.port, "/read/marker") == "written by web.1"
    result = run_dynosim(app, "ps:stop", "web.1")
    assert result.returncode == 0, result.stderr
    assert "Stopping web.1 dyno on ⬢ app... done" in result.stdout
    run.wait_for(r"heroku\[web\.1\]: Stopping all processes with SIGTERM", after_last=True)
    run.wait_for(UP, after_last=True)
    assert get(run.port, "/read/marker") == "missing"  # a new dyno, on a fresh filesystem
    missing = run_dynosim(app, "ps:stop", "worker.3")
    assert missing.returncode != 0 and "no dyno or process type 'worker.3' is running" in missing.stderr
    assert run.stop() == 0
    no_run = run_dynosim(app, "ps:stop", "web.1")
    assert no_run.returncode == 2 and "no dynosim run is active" in no_run.stderr
