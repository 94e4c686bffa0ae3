"""The resilience report on real runs of the fixture apps in fixtures/faults/ (each bug and its fixed
twin), with their faults from a plan file (`dynosim run --faults plan.json`): the report printed at the
end names the bug and its fix for the buggy twin and passes the fixed one, and `--report-json` has it
under `faults`. Also: a plan file's bad input, refused before anything starts, and `--chaos SEED`,
the same faults at the same offsets in two runs."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import make_app, run_dynosim
from test_faults import one_line_error
from test_pg_admin import _stop_one_offs as stop_one_offs
from test_pytest_plugin import inner  # noqa: F401  (the inner pytest session's fixture)

from dynosim import api

pytest_plugins = ["pytester"]


def _plan(tmp_path: Path, *faults: dict[str, Any]) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"faults": list(faults)}))
    return path


def _get(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _report(run) -> list[str]:
    lines = run.output().splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("=== dynosim resilience report"))
    return lines[heading:]


def _app(tmp_path: Path, fixture: str, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return make_app(folder, fixture)


@pytest.mark.parametrize(
    ("procfile", "survives"), [("Procfile.stale-pool", False), ("Procfile", True)], ids=["stale-pool", "pre-ping"]
)
def test_a_postgres_restart_names_the_missing_pre_ping_and_passes_the_pool_that_has_it(
    tmp_path: Path, dynosim, procfile: str, survives: bool
) -> None:
    app = _app(tmp_path, "faults/web", "web")
    plan = _plan(tmp_path, {"at": "2s", "kind": "addon-restart", "target": "heroku-postgresql"})
    report = tmp_path / "report.json"
    run = dynosim(app, "-f", procfile, "--faults", str(plan), "--report-json", str(report))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=180)
    assert _get(run.port) == 200  # the pool holds a connection when Postgres restarts
    run.wait_for(r"dynosim\[faults\]: f1 addon-restart on heroku-postgresql ended \(done", timeout=60)
    statuses = [_get(run.port) for _ in range(3)]
    assert run.stop() == 0
    printed = _report(run)
    data = json.loads(report.read_text())["faults"]
    assert [f["fault"] for f in data] == ["f1 addon-restart on heroku-postgresql"]
    if survives:
        assert statuses == [200, 200, 200]
        assert printed[0] == "=== dynosim resilience report: 1 fault(s), 1 survived ===", run.output()[-6000:]
        assert re.fullmatch(r"f1 addon-restart on heroku-postgresql \(at \+\d+\.\ds, \d+\.\ds\): survived", printed[1])
        assert printed[2] == "  requests failed: 0 during, 0 after"
        assert not any(line.startswith("  fix:") for line in printed)
        assert data[0]["survived"] is True and data[0]["bug"] is None and data[0]["failed_after"] == 0
    else:
        assert statuses == [500, 200, 200]  # the dead pooled connection, then the pool starts over
        assert printed[0] == "=== dynosim resilience report: 1 fault(s), 0 survived ==="
        assert printed[1].endswith("): did not survive: reconnect to Postgres"), printed
        assert re.fullmatch(r"  requests failed: 0 during, 1 after; recovered \d+\.\ds after it ended", printed[2])
        assert any("terminating connection due to administrator command" in line for line in printed)
        assert any(line.startswith("  fix: create the engine with pool_pre_ping=True") for line in printed)
        assert data[0]["survived"] is False and data[0]["bug"] == "reconnect to Postgres"
        assert data[0]["failed_after"] == 1 and data[0]["recovered_after"] is not None


def _push_job(app: Path, job: str) -> None:
    redis.Redis.from_url(api.config(app)["REDIS_URL"], ssl_cert_reqs=None).lpush("jobs", job)


@pytest.mark.parametrize(
    ("procfile", "survives"), [("Procfile.drops-job", False), ("Procfile", True)], ids=["drops-job", "re-queues"]
)
def test_a_cycle_mid_job_names_the_worker_that_drops_it_and_passes_the_one_that_re_queues(
    tmp_path: Path, dynosim, procfile: str, survives: bool
) -> None:
    app = _app(tmp_path, "faults/worker", "worker")
    plan = _plan(tmp_path, {"at": "3s", "kind": "dyno-cycle", "target": "worker"})
    report = tmp_path / "report.json"
    run = dynosim(app, "-f", procfile, "--stop-timeout", "3", "--faults", str(plan), "--report-json", str(report))
    run.wait_for(r"app\[worker\.1\]: worker: waiting for jobs", timeout=180)
    _push_job(app, "7")
    run.wait_for(r"app\[worker\.1\]: job 7 started")
    run.wait_for(r"dynosim\[faults\]: f1 dyno-cycle on worker ended \(done", timeout=30)
    if survives:
        run.wait_for(r"app\[worker\.1\]: job 7 re-queued")
        run.wait_for(r"app\[worker\.1\]: job 7 done", timeout=30)  # the new worker.1 took it again
    assert run.stop() == 0
    printed = _report(run)
    data = json.loads(report.read_text())["faults"]
    if survives:
        assert printed[0] == "=== dynosim resilience report: 1 fault(s), 1 survived ==="
        assert printed[1].endswith("): survived")
        assert printed[3] == "  crashes: 0; errors logged: 0; jobs lost: 0"
        assert data[0]["jobs_lost"] == 0 and data[0]["survived"] is True
    else:
        assert "job 7 done" not in run.output()
        assert printed[1].endswith("): did not survive: handle SIGTERM in workers"), printed
        assert printed[3] == "  crashes: 0; errors logged: 0; jobs lost: 1"
        assert printed[4] == "    worker.1: job 7 lost (exited without finishing it)"
        assert printed[5].startswith("  fix: trap SIGTERM in the worker and put the job back on its queue")
        assert data[0]["jobs_lost"] == 1 and data[0]["bug"] == "handle SIGTERM in workers"


@pytest.mark.parametrize(
    ("procfile", "survives"), [("Procfile.no-retry", False), ("Procfile", True)], ids=["no-retry", "retries"]
)
def test_a_redis_outage_names_the_worker_without_retries_and_passes_the_one_with_them(
    tmp_path: Path, dynosim, procfile: str, survives: bool
) -> None:
    app = _app(tmp_path, "faults/worker", "worker")
    plan = _plan(tmp_path, {"at": "1s", "kind": "addon-outage", "target": "heroku-redis", "for": "3s"})
    report = tmp_path / "report.json"
    run = dynosim(app, "-f", procfile, "--faults", str(plan), "--report-json", str(report))
    run.wait_for(r"app\[worker\.1\]: worker: waiting for jobs", timeout=180)
    run.wait_for(r"dynosim\[faults\]: f1 addon-outage on heroku-redis for 3s ended \(over", timeout=30)
    if survives:
        _push_job(app, "8")  # the worker that waited the outage out still works
        run.wait_for(r"app\[worker\.1\]: job 8 started")
    assert run.stop() == 0
    printed = _report(run)
    data = json.loads(report.read_text())["faults"]
    if survives:
        assert printed[1].endswith("): survived"), printed
        assert data[0]["crashes"] == 0 and data[0]["errors"] == 0
    else:
        assert printed[1].endswith("): did not survive: retry on Redis errors"), printed
        assert re.fullmatch(r"  crashes: [12]; errors logged: \d+; jobs lost: 0", printed[3])
        assert any(line.startswith("    worker.1: redis.exceptions.ConnectionError") for line in printed)
        assert any(line.startswith("  fix: retry the command on ConnectionError") for line in printed)
        assert data[0]["crashes"] >= 1 and data[0]["bug"] == "retry on Redis errors"


BAD_PLANS = [
    ("{", "plan.json: not JSON (line 1 column 2"),
    ('{"faults": {}}', 'plan.json: a plan is an object with a "faults" list'),
    ('{"faults": [{"at": "1s", "kind": "dyno-explode", "target": "web"}]}', 'faults[0]: unknown fault kind "dyno-explode"'),
    ('{"faults": [{"at": "1s", "kind": "dyno-crash", "target": "web", "when": 3}]}', 'faults[0]: unknown field "when"'),
    ('{"faults": [{"at": "1s", "kind": "dyno-crash", "target": "web"}, {"at": "soon", "kind": "dyno-crash", "target": "web"}]}', 'faults[1]: at: "soon" is not a duration'),
    ('{"faults": [{"at": "1s", "kind": "router-error", "probability": 2}]}', "faults[0]: probability: 2 is outside 0..1"),
    ('{"faults": [{"kind": "dyno-crash", "target": "web"}]}', 'faults[0]: "at" is missing'),
    ('{"faults": [{"at": "1s", "kind": "dyno-crash", "target": "clock"}]}', 'faults[0]: this run has no dyno or process type "clock"; its dynos: web.1, worker.1'),
    ('{"faults": [{"at": "1s", "kind": "dyno-crash", "target": "web.2"}]}', 'faults[0]: this run has no dyno or process type "web.2"'),
    ('{"faults": [{"at": "1s", "kind": "addon-outage", "target": "heroku-redis"}]}', 'faults[0]: this run has no add-on "heroku-redis"; its add-ons: none'),
    ('{"faults": [{"at": "1s", "kind": "router-latency"}]}', 'faults[0]: router-latency needs a "latency", like "200ms"'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "needle"), BAD_PLANS, ids=[needle.split(": ", 1)[-1][:30] for _, needle in BAD_PLANS])
def test_a_bad_plan_is_one_line_naming_the_file_and_entry_and_nothing_starts(
    tmp_path: Path, text: str, needle: str
) -> None:
    app = make_app(tmp_path)
    plan = tmp_path / "plan.json"
    plan.write_text(text)
    done = run_dynosim(app, "run", "--faults", str(plan), timeout=30)
    line = one_line_error(done, str(plan), needle)
    assert "Traceback" not in done.stderr + done.stdout, line
    assert "Building" not in done.stdout and not (app / ".dynosim" / "run.json").exists()


def test_chaos_and_a_plan_together_and_a_bad_rate_are_refused(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    plan = _plan(tmp_path, {"at": "1s", "kind": "dyno-crash", "target": "web"})
    one_line_error(run_dynosim(app, "run", "--faults", str(plan), "--chaos", "1"), "--faults and --chaos: give one")
    one_line_error(
        run_dynosim(app, "run", "--chaos", "1", "--chaos-rate", "often"), '--chaos-rate: "often" is not a rate'
    )


def _chaos(dynosim, tmp_path: Path, name: str) -> list[str]:
    app = _app(tmp_path, "faults/worker", name)
    run = dynosim(app, "--chaos", "10", "--chaos-rate", "30/min", "--stop-timeout", "3")
    run.wait_for(r"dynosim\[faults\]: f3 .* ended", timeout=180)
    assert run.stop() == 0
    said = [line.split(" ", 1)[1] for line in run.output().splitlines() if " dynosim[faults]: " in line]
    return [text for text in said if text.startswith("dynosim[faults]: chaos") or re.search(r": f\d .* started", text)]


def test_chaos_from_one_seed_gives_the_same_faults_at_the_same_offsets(tmp_path: Path, dynosim) -> None:
    first, second = _chaos(dynosim, tmp_path, "one"), _chaos(dynosim, tmp_path, "two")
    assert first[:6] == second[:6]
    assert first[:6] == [
        "dynosim[faults]: chaos (seed 10): dyno-cycle on worker at +1.7s",
        first[1],
        "dynosim[faults]: chaos (seed 10): addon-restart on heroku-redis at +3.4s",
        first[3],
        "dynosim[faults]: chaos (seed 10): deploy-restart on worker at +6.8s",
        first[5],
    ]
    assert re.fullmatch(r"dynosim\[faults\]: f1 dyno-cycle on worker started \(seed \d+\)", first[1])


PLUGIN = """
import pytest

pytestmark = pytest.mark.dynosim(app="app", formation="web=1")
left_on = []


@pytest.fixture
def faults_left_on(dynosim_marked_app):
    yield
    left_on.append(dynosim_marked_app.faults.active())  # after dynosim_faults' teardown, before the app stops


@pytest.mark.dynosim_fault("router-error", status=503, code="H13")
def test_the_marked_fault_is_on_once_the_app_has_started(dynosim_marked_app):
    assert dynosim_marked_app.get("/").status == 503
    assert [(f["kind"], f["status"]) for f in dynosim_marked_app.faults.active()] == [("router-error", 503)]


def test_the_fixture_is_the_app_s_faults(faults_left_on, dynosim_marked_app, dynosim_faults):
    assert dynosim_marked_app.get("/").status == 200  # no marker here: no fault
    dynosim_faults.router_error(502)
    assert dynosim_marked_app.get("/").status == 502


def test_every_fault_was_cleared_after_the_test():
    assert left_on == [[]]
"""


def test_the_pytest_marker_switches_a_fault_on_and_the_fixture_clears_them(inner) -> None:  # noqa: F811
    inner("dynosim_addons = native\n", {"test_faulty": PLUGIN}).assert_outcomes(passed=3)


def test_a_fault_added_while_it_runs_is_reported_and_a_crash_it_caused_is_no_mark_against_the_app(
    tmp_path: Path, dynosim
) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=120)
    added = run_dynosim(app, "faults:add", "dyno-crash", "--target", "web")
    assert added.returncode == 0, added.stderr
    run.wait_for(r"heroku\[web\.1\]: State changed from up to crashed")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    assert _get(run.port) == 200
    assert run.stop() == 0
    printed = _report(run)
    assert printed[0] == "=== dynosim resilience report: 1 fault(s), 1 survived ===", printed
    assert re.fullmatch(r"f1 dyno-crash on web \(at \+\d+\.\ds, \d+\.\ds\): survived", printed[1]), printed
    assert printed[2:] == ["  requests failed: 0 during, 0 after", "  crashes: 1; errors logged: 0; jobs lost: 0"]


def test_a_run_without_faults_prints_no_report_and_its_json_has_none(tmp_path: Path, dynosim) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--report-json", str(tmp_path / "report.json"))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=120)
    assert _get(run.port) == 200
    assert run.stop() == 0
    assert "resilience report" not in run.output()
    assert json.loads((tmp_path / "report.json").read_text())["faults"] == []


def test_jobs_lost_are_told_from_rq_and_celery_words_as_their_workers_log_them() -> None:
    """The Witness on the words RQ and Celery print (Celery's as its docs show them; a real RQ worker runs in
    the fixtures/faults/rq tests below): a job begun and not ended when its dyno's process exits is lost, and how."""
    from dynosim.faults.report import Witness
    from dynosim.logs import LogStream

    logs = LogStream()
    witness = Witness(logs)
    witness.watch()
    rq, done, celery = "0c9e6d4e-6b8b-4c43-9a51-2f0d3f6f2c11", "5e1d3c2b-1a09-4f8e-8d7c-6b5a4f3e2d1c", "f3b2a1c0-aaaa"
    logs.app_output("worker.1", [f"12:00:01 default: tasks.done() ({done})", f"12:00:02 default: Job OK ({done})"])
    logs.app_output("worker.1", [f"12:00:03 default: tasks.slow(10) ({rq})"])
    logs.app_output("worker.2", [f"[2026-12-04 12:00:03,001: INFO/MainProcess] Task tasks.add[{celery}] received"])
    logs.app_output(
        "worker.2", [f"[2026-12-04 12:00:03,101: INFO/ForkPoolWorker-1] Task tasks.add[{celery}] succeeded in 0.1s: 3"]
    )
    for dyno in ("worker.1", "worker.2"):
        logs.heroku(dyno, "Stopping all processes with SIGTERM")
    logs.heroku(
        "worker.1", "Error R12 (Exit timeout) -> At least one process failed to exit within 30 seconds of SIGTERM"
    )
    for dyno in ("worker.1", "worker.2"):
        logs.heroku(dyno, "Process exited with status 137")
    assert [(job.dyno, job.job, job.how) for job in witness.lost] == [("worker.1", rq, "SIGKILL after SIGTERM (R12)")]


def test_a_run_stopped_while_a_planned_fault_switches_on_lets_it_finish(tmp_path: Path, dynosim) -> None:
    app = _app(tmp_path, "faults/web", "web")
    plan = _plan(tmp_path, {"at": "0s", "kind": "addon-restart", "target": "heroku-postgresql"})
    run = dynosim(app, "--faults", str(plan))
    run.wait_for(r"dynosim\[faults\]: f1 addon-restart on heroku-postgresql started", timeout=180)
    run.supervisor().send_signal(signal.SIGINT)  # while the server is down, before it is started again
    assert run.stop() == 0
    output = run.output()
    assert re.search(r"dynosim\[faults\]: f1: heroku-postgresql \(.*\) is up again on port \d+, same data", output)
    assert "Traceback" not in output


def test_a_failover_names_the_process_that_kept_the_old_database_url(tmp_path: Path, dynosim) -> None:
    """fixtures/rotation's web and worker read DATABASE_URL at start, and the failover's restart gives them
    the new one; a detached one-off took it before and keeps it, as nothing restarts it."""
    app = make_app(tmp_path, "rotation")
    plan = _plan(tmp_path, {"at": "3s", "kind": "addon-failover", "target": "heroku-postgresql"})
    run = dynosim(app, "--faults", str(plan))
    run.wait_for(r"app\[worker\.1\]: worker: database ok", timeout=180)
    try:
        detached = run_dynosim(app, "exec", "--detach", "python worker.py 20")
        assert detached.returncode == 0, detached.stderr
        one_off = re.search(r"done, (run\.\d{4})", detached.stdout).group(1)  # type: ignore[union-attr]
        run.wait_for(rf"app\[{one_off}\]: worker: database ok")
        run.wait_for(r"dynosim\[faults\]: f1 addon-failover on heroku-postgresql ended", timeout=60)
        run.wait_for(r"app\[worker\.1\]: worker: database ok", after_last=True)  # restarted onto the new URL
        run.wait_for(rf"app\[{one_off}\]: worker: database error: .*Connection refused", after_last=True)
        assert _get(run.port) == 200
        assert run.stop() == 0
        printed = _report(run)
        assert printed[1].endswith("): did not survive: do not cache DATABASE_URL"), printed
        assert any(line.startswith(f"    {one_off}: worker: database error: connection failed") for line in printed)
        assert any(
            line.startswith("  fix: read DATABASE_URL from the environment when the process starts") for line in printed
        )
    finally:
        stop_one_offs(app)  # a detached one-off outlives the run, as on Heroku


def test_a_request_past_the_router_s_30_s_after_a_fault_names_the_30_s_limit() -> None:
    """The verdict on the router's own lines (an H12 takes 30 s to happen, too long for this suite's real
    runs): an H12 after a fault is the app's, one during router-timeout or dyno-hang is the fault's."""
    import time

    from dynosim.faults import Fault, FaultRequest
    from dynosim.faults.board import Span
    from dynosim.faults.report import Witness, outcomes
    from dynosim.logs import LogLine, LogStream

    def h12(at: float) -> LogLine:
        text = (
            'at=error code=H12 desc="Request timeout" method=GET path="/report" host=localhost request_id=x '
            'fwd="127.0.0.1" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=http'
        )
        return LogLine(at, "heroku", "router", text)

    now = time.time()
    for kind, began, survived in (
        ("addon-latency", now + 1, False),
        ("router-timeout", now - 35, True),
        ("dyno-hang", now - 35, True),
    ):
        logs = LogStream()
        witness = Witness(logs)
        witness.watch()
        fault = Fault("f1", FaultRequest(kind, latency=1.0, duration=10.0), 1, now - 40, now - 30)
        logs.publish([h12(began + 30)])  # began after the fault's end, or during it
        [outcome] = outcomes([Span(fault, now - 30)], witness, now + 60)
        assert outcome.survived is survived, (kind, outcome)
        if not survived:
            assert outcome.bug == "keep requests under 30 s" and outcome.failed_after == 1
            assert outcome.fix is not None and outcome.fix.startswith("the router gives up after 30 s (H12)")


@pytest.mark.parametrize(
    ("procfile", "survives"),
    [("Procfile.default-worker", False), ("Procfile", True)],
    ids=["rq-default-worker", "rq-heroku-worker"],
)
def test_a_cycle_mid_job_on_a_real_rq_worker_names_the_default_worker_and_passes_heroku_worker(
    tmp_path: Path, dynosim, procfile: str, survives: bool
) -> None:
    """fixtures/faults/rq: `rq worker` itself. RQ's default Worker answers SIGTERM by waiting for its
    12 s job, past the 8 s stop timeout (HerokuWorker's ShutDownImminentException comes 6 s after the
    SIGTERM): the SIGKILL loses the job. HerokuWorker's job puts itself back and the next worker does it."""
    app = _app(tmp_path, "faults/rq", "rq")
    plan = _plan(tmp_path, {"at": "5s", "kind": "dyno-cycle", "target": "worker"})
    report = tmp_path / "report.json"
    run = dynosim(app, "-f", procfile, "--stop-timeout", "8", "--faults", str(plan), "--report-json", str(report))
    run.wait_for(r"app\[worker\.1\]: \S+ \*\*\* Listening on default", timeout=180)
    enqueued = run_dynosim(app, "exec", "python enqueue.py 1")
    job = re.search(r"enqueued work 1: (\S+)", enqueued.stdout + enqueued.stderr)
    assert job is not None, enqueued.stdout + enqueued.stderr
    run.wait_for(rf"app\[worker\.1\]: .*: default: tasks\.work\(1\) \({job[1]}\)$")
    run.wait_for(r"dynosim\[faults\]: f1 dyno-cycle on worker ended \(done", timeout=30)
    if survives:
        run.wait_for(r"app\[worker\.1\]: work 1 put back")
        run.wait_for(r"app\[worker\.1\]: work 1 finished", timeout=30)  # the new worker.1 did it
    assert run.stop() == 0
    printed = _report(run)
    data = json.loads(report.read_text())["faults"]
    if survives:
        assert printed[0] == "=== dynosim resilience report: 1 fault(s), 1 survived ===", printed
        # RQ's own "raising ShutDownImminentException" warnings count as errors logged; no job is lost
        assert re.fullmatch(r"  crashes: 0; errors logged: \d+; jobs lost: 0", printed[3]), printed
        assert data[0]["jobs_lost"] == 0 and data[0]["survived"] is True
    else:
        assert "work 1 finished" not in run.output()
        assert printed[1].endswith("): did not survive: handle SIGTERM in workers"), printed
        assert f"    worker.1: job {job[1]} lost (its work horse killed by SIGTERM)" in printed, printed
        assert data[0]["jobs_lost"] == 1 and data[0]["bug"] == "handle SIGTERM in workers"


def test_rq_s_work_horse_killed_by_the_sigterm_is_a_job_lost_and_a_job_its_code_failed_is_not() -> None:
    """RQ 3's default Worker, cycled mid-job (as fixtures/faults/rq's real run prints it): the SIGTERM
    that Heroku sends every process kills the work horse and RQ logs the job `failed`; that job is lost."""
    from dynosim.faults.report import Witness
    from dynosim.logs import LogStream

    logs = LogStream()
    witness = Witness(logs)
    witness.watch()
    killed, raised = "993c83ae-4165-45ae-abcf-eb1b6d1bbae2", "5e1d3c2b-1a09-4f8e-8d7c-6b5a4f3e2d1c"
    worker = "Worker 4b3448247f8f47db9e93cab725609048"
    logs.app_output("worker.1", [f"04:52:30 {worker}: default: tasks.work(0) ({raised})"])
    logs.app_output("worker.1", [f"04:52:31 [Job {raised}]: exception raised while executing (tasks.work)"])
    logs.app_output("worker.1", [f"04:52:32 {worker}: default: tasks.work(1) ({killed})"])
    logs.heroku("worker.1", "Stopping all processes with SIGTERM")
    logs.app_output(
        "worker.1",
        [
            f"04:52:37 {worker} [PID 2]: warm shut down requested",
            f"04:52:37 {worker}: job {killed} failed (Work-horse terminated unexpectedly; waitpid returned 15 "
            "(signal 15); )",
        ],
    )
    logs.heroku("worker.1", "Process exited with status 0")
    lost = [(job.dyno, job.job, job.how) for job in witness.lost]
    assert lost == [("worker.1", killed, "its work horse killed by SIGTERM")]
