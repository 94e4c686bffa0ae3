"""Heroku Scheduler: jobs from scheduler:add and app.json's cron, listed, removed, and bad input."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import CACHE_DIR, DynosimRun, make_app, run_dynosim

from dynosim import App
from dynosim.manifest import CronSpec, parse_manifest
from dynosim.scheduler import SchedulerJobs, due

CRON = json.dumps(
    {
        "cron": [
            {"command": "python report.py", "schedule": "@daily"},
            {"command": "echo hi", "schedule": "*/5 * * * *", "concurrency_policy": "forbid"},
        ]
    }
)


def test_jobs_are_added_listed_with_next_runs_and_removed(tmp_path: Path) -> None:
    app = make_app(tmp_path, app__json=CRON)
    added = run_dynosim(app, "scheduler:add", "python manage.py clearsessions", "--every", "1h", "--at", ":30")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "Added job 1: python manage.py clearsessions (every hour at :30)\n"
    nightly = ("python nightly.py", "--every", "1d", "--at", "09:30", "--size", "performance-m")
    assert run_dynosim(app, "scheduler:add", *nightly).returncode == 0
    assert run_dynosim(app, "scheduler:add", "python often.py", "--every", "10m").returncode == 0
    assert (app / ".dynosim" / "scheduler.json").stat().st_mode & 0o777 == 0o600

    listed = run_dynosim(app, "scheduler")
    assert listed.returncode == 0, listed.stderr
    rows = [re.split(r"\s{2,}", line) for line in listed.stdout.splitlines()[2:]]
    assert [row[:3] for row in rows] == [
        ["1", "python manage.py clearsessions", "every hour at :30"],
        ["2", "python nightly.py", "every day at 09:30 UTC"],
        ["3", "python often.py", "every 10 minutes"],
        ["cron.1", "python report.py", "@daily"],
        ["cron.2", "echo hi", "*/5 * * * *"],
    ]
    assert [row[4] for row in rows] == ["formation's", "performance-m", "formation's", "formation's", "formation's"]
    next_runs = {row[0]: row[3] for row in rows}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:30 UTC", next_runs["1"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 09:30 UTC", next_runs["2"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:[0-5]0 UTC", next_runs["3"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 00:00 UTC", next_runs["cron.1"])

    removed = run_dynosim(app, "scheduler:remove", "1")
    assert (removed.returncode, removed.stdout) == (0, "Removed job 1\n")
    ids = [job["id"] for job in json.loads(run_dynosim(app, "scheduler", "--json").stdout)]
    assert ids == ["2", "3", "cron.1", "cron.2"]
    # a removed job's ID is not handed out again
    assert run_dynosim(app, "scheduler:add", "echo again", "--every", "1h").stdout.startswith("Added job 4:")


def failure(app: Path, *args: str) -> str:
    result = run_dynosim(app, *args)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    return result.stderr


def test_bad_frequencies_and_times_are_one_line_and_store_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert "--every '5m': Heroku Scheduler runs jobs every 10m, 1h or 1d" in failure(
        app, "scheduler:add", "echo", "--every", "5m"
    )
    assert "write it like :30" in failure(app, "scheduler:add", "echo", "--every", "1h", "--at", ":15")
    assert "write it like :30" in failure(app, "scheduler:add", "echo", "--every", "1h", "--at", "09:30")
    assert "on the hour or half hour; write it like 09:30" in failure(
        app, "scheduler:add", "echo", "--every", "1d", "--at", "09:15"
    )
    assert "write it like 09:30" in failure(app, "scheduler:add", "echo", "--every", "1d", "--at", "24:00")
    assert "drop --at" in failure(app, "scheduler:add", "echo", "--every", "10m", "--at", ":10")
    assert '--size: unknown dyno size "huge"' in failure(
        app, "scheduler:add", "echo", "--every", "1h", "--size", "huge"
    )
    assert "no Scheduler job '7'" in failure(app, "scheduler:remove", "7")
    assert not (app / ".dynosim" / "scheduler.json").exists()


def test_a_malformed_cron_entry_names_app_json_and_its_key(tmp_path: Path) -> None:
    app = make_app(tmp_path, app__json=json.dumps({"cron": [{"command": "x", "schedule": "* * * * * *"}]}))
    assert 'app.json: cron[0].schedule "* * * * * *" is not a cron schedule' in failure(app, "scheduler")
    (app / "app.json").write_text(json.dumps({"cron": [{"command": "x", "schedule": "61 * * * *"}]}))
    assert "cron[0].schedule" in failure(app, "scheduler")
    (app / "app.json").write_text(json.dumps({"cron": [{"schedule": "@daily"}]}))
    assert 'cron[0] has no "command"' in failure(app, "scheduler")
    (app / "app.json").write_text(
        json.dumps({"cron": [{"command": "x", "schedule": "@daily", "concurrency_policy": "never"}]})
    )
    assert 'cron[0].concurrency_policy must be one of allow, forbid, replace, got "never"' in failure(app, "scheduler")


def test_app_json_cron_entries_are_read_in_dokkus_format() -> None:
    manifest = parse_manifest(CRON, Path("/app/app.json"))
    assert manifest.cron == (
        CronSpec(command="python report.py", schedule="@daily", concurrency_policy="allow"),
        CronSpec(command="echo hi", schedule="*/5 * * * *", concurrency_policy="forbid"),
    )


def lines_of(run: DynosimRun, dyno: str) -> list[str]:
    """The log lines of one dyno, without their timestamps."""
    return [line.split(" ", 1)[1] for line in run.drain() if f"[{dyno}]:" in line]


def test_an_hourly_job_fires_under_a_sped_up_clock_in_a_scheduler_dyno(tmp_path: Path, dynosim: type) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n", **{".env": "GREETING=hello\n"})
    assert run_dynosim(app, "scheduler:add", 'echo "$GREETING from $DYNO"; exit 3', "--every", "1h").returncode == 0
    run = dynosim(app, "--clock-speed", "3600")  # an hour a second
    name = run.wait_for(r"heroku\[(scheduler\.\d{4})\]: Starting process", timeout=60)[1]
    run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from up to complete")
    assert lines_of(run, name) == [
        f'heroku[{name}]: Starting process with command `echo "$GREETING from $DYNO"; exit 3`',
        f"heroku[{name}]: State changed from starting to up",
        f"app[{name}]: hello from {name}",
        f"heroku[{name}]: Process exited with status 3",
        f"heroku[{name}]: State changed from up to complete",
    ]
    # an hour later (a second), the next run, in a dyno of its own
    second = run.wait_for(r"heroku\[(scheduler\.\d{4})\]: Starting process", after_last=True)[1]
    assert second != name
    # `dynosim scheduler` gives next runs by the run's clock, an hour a second here
    before = json.loads(run_dynosim(app, "scheduler", "--json").stdout)[0]["next_run"]
    time.sleep(2.5)
    after = json.loads(run_dynosim(app, "scheduler", "--json").stdout)[0]["next_run"]
    gap = datetime.strptime(after, "%Y-%m-%d %H:%M UTC") - datetime.strptime(before, "%Y-%m-%d %H:%M UTC")
    assert gap >= timedelta(hours=2), (before, after)
    assert run.stop() == 0


def test_a_job_that_outlives_its_interval_is_stopped_as_heroku_stops_it(tmp_path: Path, dynosim: type) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    stubborn = "python -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'"
    assert run_dynosim(app, "scheduler:add", stubborn, "--every", "10m").returncode == 0
    # 10 minutes are 2 s, and the SIGKILL comes 1 s after the SIGTERM rather than Heroku's 30
    run = dynosim(app, "--clock-speed", "300", "--stop-timeout", "1")
    name = run.wait_for(r"heroku\[(scheduler\.\d{4})\]: State changed from starting to up", timeout=60)[1]
    run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from up to complete", timeout=30)
    assert lines_of(run, name)[2:] == [
        f"heroku[{name}]: Stopping all processes with SIGTERM",
        f"heroku[{name}]: Error R12 (Exit timeout) -> At least one process failed to exit within 1 seconds of SIGTERM",
        f"heroku[{name}]: Stopping remaining processes with SIGKILL",
        f"heroku[{name}]: Process exited with status 137",
        f"heroku[{name}]: State changed from up to complete",
    ]
    assert run.stop() == 0


def test_scheduler_run_runs_a_job_now_in_the_running_app(tmp_path: Path, dynosim: type) -> None:
    app = make_app(
        tmp_path,
        procfile="web: python server.py\n",
        app__json=json.dumps({"cron": [{"command": "echo report for $DYNO $DYNO_RAM", "schedule": "@daily"}]}),
    )
    big = run_dynosim(app, "scheduler:add", "echo big $DYNO_RAM", "--every", "1d", "--size", "standard-2x")
    assert big.returncode == 0, big.stderr
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    started = run_dynosim(app, "scheduler:run", "cron.1")
    assert started.returncode == 0, started.stderr
    name = re.fullmatch(r"Running job cron\.1 on (scheduler\.\d{4})\n", started.stdout)[1]  # type: ignore[index]
    run.wait_for(rf"app\[{re.escape(name)}\]: report for {re.escape(name)} 512")  # the formation's size
    run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from up to complete")
    sized = run_dynosim(app, "scheduler:run", "1")
    name = re.fullmatch(r"Running job 1 on (scheduler\.\d{4})\n", sized.stdout)[1]  # type: ignore[index]
    run.wait_for(rf"app\[{re.escape(name)}\]: big 1024")  # the job's own --size
    assert "no Scheduler job 'nope'" in run_dynosim(app, "scheduler:run", "nope").stderr
    assert run.stop() == 0
    released = run_dynosim(app, "scheduler:run", "1")  # no run now: a one-off from the current release
    assert (released.returncode, released.stdout) == (0, "big 1024\n"), released.stderr
    assert "no release yet" not in released.stderr


def test_scheduler_run_with_no_run_active_runs_a_one_off_scheduler_dyno(tmp_path: Path) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    job = 'echo "$DYNO $DYNO_RAM"; exit 3'
    assert run_dynosim(app, "scheduler:add", job, "--every", "1h", "--size", "2x").returncode == 0
    # before any release, as `dynosim exec`: a build that is not released
    unreleased = run_dynosim(app, "scheduler:run", "1")
    assert unreleased.returncode == 3, unreleased.stderr
    assert re.fullmatch(r"scheduler\.\d{4} 1024\n", unreleased.stdout)
    assert "the app has no release yet: this one-off runs a build of it that is not released" in unreleased.stderr
    assert "(standard-2x)" in unreleased.stderr
    assert run_dynosim(app, "releases").stdout == "app has no releases.\n"
    assert "no Scheduler job 'nope'" in failure(app, "scheduler:run", "nope")


def test_the_sped_up_clock_also_drives_the_daily_dyno_cycle(tmp_path: Path, dynosim: type) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--clock-speed", "43200", "--no-jitter")  # Heroku's 24 h are 2 s
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"heroku\[web\.1\]: Cycling", timeout=15, after_last=True)
    assert run.stop() == 0


DOCTOR_APPS = Path(__file__).parent / "doctor_apps"


def scheduler_findings(app: Path) -> list[dict[str, object]]:
    result = run_dynosim(app, "doctor", "--json", "--no-run")
    return [f for f in json.loads(result.stdout) if f["code"] == "scheduler-in-web"]


def test_doctor_flags_an_in_process_scheduler_in_web_with_the_fix(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(DOCTOR_APPS / "apscheduler_web", app)
    [finding] = scheduler_findings(app)
    assert (finding["severity"], finding["file"], finding["line"]) == ("warning", "jobs.py", 8)
    assert "APScheduler's BackgroundScheduler" in str(finding["message"])
    assert "with web=N" in str(finding["message"])
    assert "dynosim scheduler:add" in str(finding["fix"]) and "`clock` dyno" in str(finding["fix"])
    # the fix: the same scheduler, blocking, in one clock dyno; web no longer imports it
    (app / "app.py").write_text("from flask import Flask\n\napp = Flask(__name__)\n")
    (app / "jobs.py").write_text(
        "from apscheduler.schedulers.blocking import BlockingScheduler\n\n"
        "scheduler = BlockingScheduler()\nscheduler.add_job(print, 'cron', hour=8)\nscheduler.start()\n"
    )
    (app / "Procfile").write_text("web: gunicorn app:app\nclock: python jobs.py\n")
    assert scheduler_findings(app) == []


def test_doctor_flags_celery_beat_and_the_schedule_library_in_web(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(DOCTOR_APPS / "clean", app)
    (app / "Procfile").write_text("web: celery -A tasks worker -B & gunicorn app:app\n")
    [beat] = scheduler_findings(app)
    assert (beat["file"], beat["line"]) == ("Procfile", 1) and "celery beat" in str(beat["message"])
    (app / "Procfile").write_text("web: python server.py\n")
    (app / "server.py").write_text(
        (app / "server.py").read_text() + "\nimport schedule\nschedule.every(10).minutes.do(print)\n"
    )
    [every] = scheduler_findings(app)
    assert every["file"] == "server.py" and "schedule.every()" in str(every["message"])


def cron_app(tmp_path: Path, policy: str) -> Path:
    job = {
        "command": "echo start $DYNO; sleep 4; echo done $DYNO",
        "schedule": "* * * * *",
        "concurrency_policy": policy,
    }
    return make_app(tmp_path, procfile="web: python server.py\n", app__json=json.dumps({"cron": [job]}))


def test_concurrency_policy_forbid_skips_a_run_while_the_last_goes_on(tmp_path: Path, dynosim: type) -> None:
    run = dynosim(cron_app(tmp_path, "forbid"), "--clock-speed", "60")  # a minute a second
    first = run.wait_for(r"app\[(scheduler\.\d{4})\]: start", timeout=60)[1]
    run.wait_for(r"dynosim\[scheduler\]: job cron\.1 is still running: this run is skipped", after_last=True)
    # an app.json job has no time limit: it ends on its own, not stopped at its next run
    run.wait_for(rf"app\[{re.escape(first)}\]: done {re.escape(first)}", timeout=15)
    assert f"heroku[{first}]: Stopping all processes with SIGTERM" not in run.output()
    assert run.stop() == 0


def test_concurrency_policy_replace_stops_the_last_run_first(tmp_path: Path, dynosim: type) -> None:
    run = dynosim(cron_app(tmp_path, "replace"), "--clock-speed", "60")
    first = run.wait_for(r"app\[(scheduler\.\d{4})\]: start", timeout=60)[1]
    run.wait_for(rf"heroku\[{re.escape(first)}\]: Stopping all processes with SIGTERM", after_last=True)
    run.wait_for(rf"heroku\[{re.escape(first)}\]: State changed from up to complete", after_last=True)
    second = run.wait_for(r"app\[(scheduler\.\d{4})\]: start", after_last=True)[1]
    assert second != first and f"done {first}" not in run.output()
    assert run.stop() == 0


def test_the_api_runs_jobs_and_speeds_up_the_clock(tmp_path: Path) -> None:
    app_dir = make_app(tmp_path, procfile="web: python server.py\n")
    assert run_dynosim(app_dir, "scheduler:add", "echo hourly from $DYNO", "--every", "1h").returncode == 0
    with App(app_dir, clock_speed=3600, cache_dir=CACHE_DIR) as app:
        fired = app.logs.wait_for(r"app\[scheduler\.\d{4}\]: hourly from scheduler\.\d{4}", timeout=30)
        assert fired.dyno.startswith("scheduler.")
        name = app.scheduler_run("1")
        assert name is not None and re.fullmatch(r"scheduler\.\d{4}", name)
        app.logs.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from up to complete")


def test_runs_missed_before_the_first_look_are_not_replayed_and_a_jump_fires_once() -> None:
    [job] = SchedulerJobs(Path("/nonexistent")).jobs(parse_manifest(CRON, Path("app.json")))[1:]  # */5
    start = datetime(2026, 1, 1, 12, 2, tzinfo=UTC)
    # the run started at 12:02: the 12:00 run (and every earlier one) is not made up for
    assert due([job], start, start + timedelta(minutes=2)) == []
    assert due([job], start, start + timedelta(minutes=3)) == [(job, datetime(2026, 1, 1, 12, 5, tzinfo=UTC))]
    # a clock that leapt over several runs fires the job once, at the last of them
    assert due([job], start, start + timedelta(minutes=31)) == [(job, datetime(2026, 1, 1, 12, 30, tzinfo=UTC))]
