"""`dynosim run` against real processes, signals and HTTP, as a user sees it."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import psutil
import pytest
from conftest import make_app

from dynosim.app import load_app

HEROKU_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 (app|heroku|dynosim)\[[\w.-]+\]: ")
SANDBOXES = ["namespaces", "copy"]


def get_json(port: int, path: str = "/") -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_web_dyno_serves_with_herokus_environment(tmp_path, dynosim, sandbox):
    app = make_app(tmp_path, __env="GREETING='hello world'\nexport SECRET=\"s3 cr#t\"\n")
    (app / ".profile.d").mkdir()
    (app / ".profile.d" / "greeting.sh").write_text('export FROM_PROFILE="$GREETING!"\n')
    run = dynosim(app, "--sandbox", sandbox)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    body = get_json(run.port)  # through the router, to the dyno's own private port
    env = body["env"]
    private = int(run.wait_for(r"app\[web\.1\]: listening on (\d+)").group(1))
    assert body["dyno"] == "web.1" and env["PORT"] == str(private) != str(run.port)
    assert env["HOME"] == body["cwd"] and str(app) not in body["cwd"]  # its own filesystem, not the app folder
    assert env["PATH"].split(":")[0].endswith("/bin") and "venvs" in env["PATH"].split(":")[0]
    assert env["PYTHONUNBUFFERED"] == "true" and env["WEB_CONCURRENCY"] == "2" and env["DYNO_RAM"] == "512"
    assert env["GREETING"] == "hello world" and env["SECRET"] == "s3 cr#t"
    assert env["FROM_PROFILE"] == "hello world!"
    run.wait_for(r"app\[worker\.1\]: worker started")
    assert run.stop() == 0
    out = run.output()
    # the release phase ran first, in its own dyno, before any formation dyno
    release = re.search(r"heroku\[(release\.\d{4})\]: Starting process with command `python release.py`", out)
    assert release and out.index(release.group(0)) < out.index("heroku[web.1]: Starting process")
    assert f"app[{release.group(1)}]: release phase in {release.group(1)}, exiting 0" in out
    assert f"heroku[{release.group(1)}]: State changed from up to complete" in out
    assert re.search(r"app\[api\]: Release v\d+ created by user ", out)
    for dyno in ("web.1", "worker.1"):
        assert f"heroku[{dyno}]: Stopping all processes with SIGTERM" in out
        assert f"heroku[{dyno}]: State changed from up to down" in out
    assert "app[worker.1]: worker got SIGTERM" in out
    stream = [line for line in run.lines if line[:4].isdigit()]
    assert stream and all(HEROKU_LINE.match(line) for line in stream)
    assert "\x1b[" not in out  # plain when piped


def test_formation_runs_the_requested_dynos_on_their_own_ports(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path), "--formation", "web=2,worker=0")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    seen = {get_json(run.port)["dyno"] for _ in range(40)}
    assert seen == {"web.1", "web.2"}  # the router spreads requests over both
    assert run.stop() == 0
    out = run.output()
    assert "worker.1" not in out
    assert "app[api]: Scaled to web@2:Standard-1X worker@0:Standard-1X" in out


def test_a_crashing_dyno_is_restarted_on_herokus_schedule(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="worker: python crash.py 3\n")
    run = dynosim(app, "--crash-backoff-scale", "0.001")
    run.wait_for(r"heroku\[worker\.1\]: Process exited with status 3")
    run.wait_for(r"heroku\[worker\.1\]: State changed from up to crashed")
    run.wait_for(r"heroku\[worker\.1\]: State changed from crashed to starting")  # first restart: at once
    run.wait_for(r"restarts it in 0\.6s")  # second boot crash: 10 min scaled by 0.001
    starts = time.monotonic()
    run.wait_for(r"heroku\[worker\.1\]: Starting process with command `python crash.py 3`", timeout=10, after_last=True)
    assert run.stop() == 0
    assert run.output().count("Starting process with command `python crash.py 3`") >= 3
    assert time.monotonic() - starts < 10


def test_a_command_that_is_not_found_crashes_with_127_and_dynosim_keeps_running(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: no-such-command --flag\n")
    run = dynosim(app, "--crash-backoff-scale", "0.001")
    run.wait_for(r"app\[worker\.1\]: .*no-such-command: command not found")
    run.wait_for(r"heroku\[worker\.1\]: Process exited with status 127")
    run.wait_for(r"heroku\[worker\.1\]: State changed from crashed to starting")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert get_json(run.port)["dyno"] == "web.1"
    assert run.stop() == 0


def test_a_web_dyno_that_never_binds_gets_r10(tmp_path, dynosim):
    run = dynosim(
        make_app(tmp_path, procfile="web: python nobind.py\n"),
        "--boot-timeout",
        "1.5",
        "--crash-backoff-scale",
        "0.001",
    )
    run.wait_for(
        r"heroku\[web\.1\]: Error R10 \(Boot timeout\) -> Web process failed to bind to \$PORT within 1\.5 seconds of launch"
    )
    run.wait_for(r"heroku\[web\.1\]: Stopping process with SIGKILL")
    run.wait_for(r"heroku\[web\.1\]: Process exited with status 137")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to crashed")
    assert run.stop() == 0


def test_listening_on_localhost_only_does_not_count_and_says_why(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="web: python localhost.py\n"), "--boot-timeout", "2")
    hint = run.wait_for(r"dynosim\[web\.1\]: web process listens on 127\.0\.0\.1:\d+ only.*0\.0\.0\.0:\$PORT")
    assert (
        'app.run(host="0.0.0.0", port=int(os.environ["PORT"]))' in hint.string
    )  # no server in the command: the code's fix
    run.wait_for(r"Error R10")
    assert run.stop() == 0
    assert "State changed from starting to up" not in run.output().split("web.1")[-1]


def test_the_loopback_hint_names_the_fix_for_the_server_the_command_runs(tmp_path, dynosim):
    """uvicorn listens on 127.0.0.1 unless told: the hint gives uvicorn's flags, not gunicorn's."""
    app = make_app(tmp_path, procfile="web: uvicorn main:app --port $PORT\n")
    (app / "bin").mkdir()
    (app / "bin" / "uvicorn").write_text('#!/bin/sh\nexec python "$HOME/localhost.py"\n')  # uvicorn's default host
    (app / "bin" / "uvicorn").chmod(0o755)
    (app / ".profile.d").mkdir()
    (app / ".profile.d" / "bin.sh").write_text('PATH="$HOME/bin:$PATH"\n')
    run = dynosim(app, "--boot-timeout", "2")
    hint = run.wait_for(r"dynosim\[web\.1\]: web process listens on 127\.0\.0\.1:\d+ only")
    assert hint.string.endswith("Bind 0.0.0.0:$PORT: for uvicorn, --host 0.0.0.0 --port $PORT"), hint.string
    run.wait_for(r"Error R10")
    assert run.stop() == 0


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_dyno_that_ignores_sigterm_gets_r12_and_sigkill(tmp_path, dynosim, sandbox):
    run = dynosim(
        make_app(tmp_path, procfile="worker: python stubborn.py\n"), "--stop-timeout", "1", "--sandbox", sandbox
    )
    run.wait_for(r"app\[worker\.1\]: stubborn started")
    assert run.stop() == 0
    out = run.output()
    assert "app[worker.1]: ignoring SIGTERM" in out
    assert (
        "heroku[worker.1]: Error R12 (Exit timeout) -> At least one process failed to exit within 1 seconds of SIGTERM"
        in out
    )
    assert "heroku[worker.1]: Stopping remaining processes with SIGKILL" in out
    assert "heroku[worker.1]: Process exited with status 137" in out


def test_a_second_ctrl_c_forces_the_stop(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="worker: python stubborn.py\n"))
    run.wait_for(r"app\[worker\.1\]: stubborn started")
    started = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(r"Stopping all processes with SIGTERM")
    time.sleep(0.3)  # a person's second press
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(10) == 0
    assert time.monotonic() - started < 10  # not the 30 s grace
    assert "forcing: SIGKILL to every dyno" in run.output()


def test_one_stop_signal_delivered_twice_is_one_graceful_stop(tmp_path, dynosim):
    """`timeout` sends SIGTERM to dynosim and again to its process group; a wrapper (make, poetry run)
    forwards a terminal's Ctrl-C that dynosim got too: one request, not a second Ctrl-C."""
    run = dynosim(
        make_app(tmp_path, procfile="worker: python -c 'import time; print(\"up\", flush=True); time.sleep(600)'\n")
    )
    run.wait_for(r"app\[worker\.1\]: up")
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.03)  # handled, so the kernel does not merge the two into one
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(20) == 0
    out = run.output()
    assert "forcing" not in out
    assert "heroku[worker.1]: Process exited with status 143" in out


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_nothing_is_left_running_after_a_stop(tmp_path, dynosim, sandbox):
    run = dynosim(make_app(tmp_path, procfile="web: python forker.py\n"), "--sandbox", sandbox, "--stop-timeout", "2")
    daemon = int(run.wait_for(r"daemon pid (\d+)").group(1))
    grandchild = int(run.wait_for(r"grandchild pid (\d+)").group(1))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    if sandbox == "copy":  # in namespaces the pids printed are the dyno's own, not the host's
        assert psutil.pid_exists(daemon) and psutil.pid_exists(grandchild)
    pids = [p.pid for p in psutil.Process(run.proc.pid).children(recursive=True)]
    assert run.stop() == 0
    assert all(gone(pid) for pid in pids)
    if sandbox == "copy":
        assert gone(daemon) and gone(grandchild)
    # (no global scan for leftovers here: tests running in parallel start the same fixture)


def test_sigterm_to_dynosim_stops_gracefully(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="worker: python worker.py\n"))
    run.wait_for(r"app\[worker\.1\]: worker started")
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(30) == 0
    assert "app[worker.1]: worker got SIGTERM" in run.output()


def test_a_clean_stop_leaves_no_dyno_folder_behind(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    run = dynosim(app, "--formation", "web=2,worker=1")
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    runtime_dir = load_app(app).runtime_dir
    assert runtime_dir.is_dir()  # the dynos' filesystems live here while they run
    assert run.stop() == 0
    assert not runtime_dir.exists()  # not even the empty folder, in /tmp, run after run


def test_killed_with_sigkill_namespaced_dynos_die_with_it(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="web: python forker.py\n"), "--sandbox", "namespaces")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    pids = [p.pid for p in psutil.Process(run.proc.pid).children(recursive=True)]
    assert len(pids) >= 4
    run.proc.kill()
    assert all(gone(pid) for pid in pids)


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_dyno_folders_of_a_run_killed_with_sigkill_go_at_the_end_of_a_later_run_of_any_app(tmp_path, dynosim, sandbox):
    killed = make_app(tmp_path / "killed", procfile="web: python server.py\n")
    run = dynosim(killed, "--sandbox", sandbox)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    left = load_app(killed).runtime_dir
    assert [p.name[:6] for p in left.iterdir()] == ["web.1-"]  # its dyno's folder, which it cannot wipe…
    run.proc.kill()
    run.proc.wait(10)  # (a run of another test, ending now, may sweep it already)
    other = make_app(tmp_path / "other", procfile="worker: python worker.py\n")
    live = dynosim(other, "--sandbox", sandbox)  # a run still going when the next one ends
    live.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    later = dynosim(make_app(tmp_path / "later", procfile="worker: python worker.py\n"), "--sandbox", sandbox)
    later.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    assert later.stop() == 0
    assert not left.exists()
    assert [p.name[:9] for p in load_app(other).runtime_dir.iterdir()] == ["worker.1-"]  # a live run's: kept
    assert live.stop() == 0


def test_killed_with_sigkill_the_next_run_reaps_what_was_left(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python forker.py\n")
    run = dynosim(app, "--sandbox", "copy")
    daemon = int(run.wait_for(r"daemon pid (\d+)").group(1))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    supervisor = psutil.Process(run.proc.pid)
    # its children too, the dyno's keeper first, which would end the dyno when its parent dies; the
    # supervisor held still meanwhile, so it does not see its keeper go and stop the dyno itself
    supervisor.suspend()
    for process in [*supervisor.children(), supervisor]:
        process.kill()
    run.proc.wait()
    assert psutil.pid_exists(daemon)  # a copy-mode daemon outlives a SIGKILLed supervisor and keeper…
    again = dynosim(app, "--sandbox", "copy")
    again.wait_for(r"dynosim: reaped \d+ process\(es\) left by a previous run that was killed")
    assert gone(daemon)  # …until the next run reaps it
    again.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert again.stop() == 0


def test_a_failing_release_phase_starts_no_dyno(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="release: python release.py 2\nweb: python server.py\n"))
    assert run.proc.wait(60) == 1
    out = run.output()
    assert re.search(r"app\[api\]: Release v\d+ command failed by user", out)
    assert "dynosim: error: release phase failed: `python release.py 2` (Procfile:1) exited with status 2" in out
    assert "web.1" not in out
    assert "Traceback" not in out


def test_a_flood_of_output_arrives_whole_and_in_order(tmp_path, dynosim):
    count = 50000
    run = dynosim(make_app(tmp_path, procfile=f"worker: python flood.py {count}\nweb: python flood.py {count}\n"))
    run.wait_for(r"app\[worker\.1\]: flood done", timeout=120)
    run.wait_for(r"app\[web\.1\]: flood done", timeout=120)
    assert run.stop() == 0
    for dyno in ("worker.1", "web.1"):
        lines = [line.split(": ", 1)[1] for line in run.lines if f" app[{dyno}]: line " in line]
        assert lines == [f"line {i}" for i in range(count)]


def test_a_wipe_of_a_folder_that_goes_meanwhile_is_quiet(tmp_path, monkeypatch):
    # what a run killed mid-wipe leaves the next run's lock to finish: it raised FileNotFoundError (issue 22)
    from dynosim.runtime import sandbox

    root = tmp_path / "run"
    dyno = root / "web.1"
    (dyno / "app" / "deep").mkdir(parents=True)
    (dyno / "app" / "deep" / "file").write_text("x")

    def gone_meanwhile(path):
        import shutil

        shutil.rmtree(path)  # another process wiped it between the check and the wipe
        return False

    monkeypatch.setattr(sandbox, "remove_if_empty", gone_meanwhile)
    sandbox.wipe_dir(dyno, root)
    assert not dyno.exists()
