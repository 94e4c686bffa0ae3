"""The formation is the app's: `ps:scale` and `ps:resize` last until changed, `--formation` is one run's."""

from __future__ import annotations

import json

from conftest import make_app, run_dynosim


def test_the_formation_outlives_the_run_that_scaled_it(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    assert run_dynosim(app, "ps:scale", "web=2", "worker=0").returncode == 0
    assert run_dynosim(app, "ps:resize", "web=2x").returncode == 0
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    assert run.stop() == 0

    again = dynosim(app)
    again.wait_for(r"app\[api\]: Scaled to web@2:Standard-2X worker@0:Standard-1X by user")
    again.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    ps = json.loads(run_dynosim(app, "ps", "--json").stdout)
    assert sorted((row["name"], row["size"]) for row in ps) == [("web.1", "standard-2x"), ("web.2", "standard-2x")]
    assert again.stop() == 0


def test_scaling_with_no_run_is_kept_and_a_runs_formation_overrides_it_for_that_run(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    scaled = run_dynosim(app, "ps:scale", "worker=0")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout == (
        "Scaling dynos... done, worker at 0 (no run is active: the next `dynosim run` starts this formation)\n"
    )
    for bad, message in (
        (("wrk=1",), 'ps:scale: no process type "wrk" in Procfile'),
        (("web=-1",), "cannot be negative"),
    ):
        result = run_dynosim(app, "ps:scale", *bad)
        assert result.returncode == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
    bad_size = run_dynosim(app, "ps:resize", "web=huge")
    assert bad_size.returncode == 1 and 'ps:resize web: unknown dyno size "huge"' in bad_size.stderr

    run = dynosim(app, "--formation", "worker=1")
    run.wait_for(
        r"^formation for this run: web@1:Standard-1X worker@1:Standard-1X \(from the command line\); "
        r"the app's own, web@1:Standard-1X worker@0:Standard-1X, stays for the next run"
    )
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    assert run.stop() == 0

    again = dynosim(app)
    again.wait_for(r"app\[api\]: Scaled to web@1:Standard-1X worker@0:Standard-1X by user")
    again.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert "worker.1" not in again.output() and "formation for this run" not in again.output()
    assert again.stop() == 0


def test_a_live_ps_scale_past_herokus_limits_is_refused_and_the_run_stays_as_it_was(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    refused = run_dynosim(app, "ps:scale", "web=99999")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "ps:scale: 100000 dynos in all: Heroku limits an app to 100 dynos" in refused.stderr
    ps = json.loads(run_dynosim(app, "ps", "--json").stdout)
    assert sorted(row["name"] for row in ps) == ["web.1", "worker.1"]
    resized = run_dynosim(app, "ps:scale", "worker=2")
    assert resized.returncode == 0
    eco = run_dynosim(app, "ps:resize", "worker=eco")
    assert eco.returncode == 1 and "worker=2: Eco dynos run one per process type" in eco.stderr
    assert run.stop() == 0
