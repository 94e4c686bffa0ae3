"""app.json `scripts.postdeploy`: once in an app's life, after its first successful release, in a one-off dyno."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import free_port, make_app, run_dynosim

GIT = ["-c", "user.email=dev@example.com", "-c", "user.name=dev"]
STARTED = r"heroku\[(postdeploy\.\d{4})\]: Starting process with command"


def git(app: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(app), *GIT, *args], check=True, capture_output=True)


def postdeploy_app(tmp_path: Path, postdeploy: object) -> Path:
    app = make_app(
        tmp_path, procfile="web: python server.py\n", app__json=json.dumps({"scripts": {"postdeploy": postdeploy}})
    )
    git(app, "init", "-q")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "one")
    return app


def serves(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return int(response.status)


def test_postdeploy_runs_once_after_the_first_release_and_never_again(tmp_path, dynosim):
    app = postdeploy_app(tmp_path, "echo seeding $DYNO")
    run = dynosim(app)
    name = run.wait_for(STARTED)[1]
    run.wait_for(rf"app\[{re.escape(name)}\]: seeding {re.escape(name)}")
    run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from up to complete")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    record = app / ".dynosim" / "postdeploy.json"
    for _ in range(100):  # written once the dyno's exit is collected, a moment after its "complete" line
        if record.exists():
            break
        time.sleep(0.05)
    assert json.loads(record.read_text()) == {"release": 1, "dyno": name, "status": 0}
    assert record.stat().st_mode & 0o777 == 0o600

    (app / "VERSION").write_text("two\n")
    git(app, "add", "VERSION")
    git(app, "commit", "-qm", "two")
    deployed = run_dynosim(app, "deploy")
    assert deployed.returncode == 0, deployed.stderr
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    assert run.stop() == 0
    assert len(re.findall(STARTED, run.output())) == 1  # not on the deploy

    again = dynosim(app)
    again.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert again.stop() == 0
    assert "postdeploy." not in again.output()  # nor on a later run


def test_a_failing_postdeploy_is_reported_and_the_web_dyno_still_serves(tmp_path, dynosim):
    app = postdeploy_app(tmp_path, {"command": "python -c 'raise SystemExit(3)'", "size": "standard-2x"})
    run = dynosim(app)
    name = run.wait_for(STARTED)[1]
    line = run.wait_for(r"app\.json scripts\.postdeploy .* failed \(exited with status 3\)").string
    assert name in line
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert serves(run.port) == 200
    assert run.stop() == 0
    assert json.loads((app / ".dynosim" / "postdeploy.json").read_text())["status"] == 3


def test_a_bad_postdeploy_value_is_refused_before_anything_starts(tmp_path):
    cases = {
        "42": (42, "app.json: scripts.postdeploy must be a command string or an object"),
        "no command": ({"size": "standard-1x"}, 'app.json: scripts.postdeploy has no "command"'),
        "bad size": ({"command": "echo hi", "size": "huge"}, "app.json scripts.postdeploy.size"),
    }
    for case, (value, message) in cases.items():
        app = postdeploy_app(tmp_path / case.replace(" ", "-"), value)
        result = run_dynosim(app, "run", "--port", str(free_port()))
        assert result.returncode != 0, case
        assert message in result.stderr and result.stderr.count("\n") == 1, (case, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (app / ".dynosim" / "releases.json").exists(), case
