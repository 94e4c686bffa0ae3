"""`dynosim exec --detach` is `heroku run:detached`: the one-off runs in the background, its output on the log stream."""

from __future__ import annotations

import re

from conftest import make_app, run_dynosim


def test_a_detached_one_off_writes_to_the_log_stream(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    result = run_dynosim(app, "exec", "--detach", "echo hello from $DYNO")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    match = re.fullmatch(r"Running echo hello from \$DYNO on ⬢ app\.\.\. done, (run\.\d{4}) \(Standard-1X\)", first)
    assert match is not None, first
    name = match.group(1)
    assert second == f"Run dynosim logs --dyno {name} to view the output."
    run.wait_for(rf"app\[{re.escape(name)}\]: hello from {re.escape(name)}", timeout=30)
    run.wait_for(rf"heroku\[{re.escape(name)}\]: Process exited with status 0", timeout=30)
    logs = run_dynosim(app, "logs", "--dyno", name)
    assert f"app[{name}]: hello from {name}" in logs.stdout
    assert run.stop() == 0


def test_detach_needs_a_run(tmp_path):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    result = run_dynosim(app, "exec", "--detach", "true")
    assert result.returncode != 0 and "exec --detach: no dynosim run is active" in result.stderr
    assert "Traceback" not in result.stderr
