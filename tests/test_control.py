"""Operating a running app from another terminal, and its memory, as Heroku users do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import CACHE_DIR, FIXTURES, make_app, run_dynosim

from dynosim.runtime.memory import MemoryPolicy


def env_of(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return json.loads(response.read())["env"]


def test_ps_scale_restart_logs_and_config_from_another_terminal(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    ps = json.loads(run_dynosim(app, "ps", "--json").stdout)
    assert {(row["name"], row["state"]) for row in ps} == {("web.1", "up"), ("worker.1", "up")}
    scaled = run_dynosim(app, "ps:scale", "web=2", "worker=0")
    assert scaled.returncode == 0 and "web at 2, worker at 0" in scaled.stdout
    run.wait_for(r"heroku\[worker\.1\]: State changed from up to down")
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    for bad, message in ((("wrk=1",), 'no process type "wrk"'), (("web=-1",), "cannot be negative")):
        result = run_dynosim(app, "ps:scale", *bad)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    # a value with a newline and shell metacharacters is stored and passed exactly, never to a shell
    weird = "two\nlines; $(touch /tmp/pwned-by-config) `id` 'q' \"dq\""
    assert run_dynosim(app, "config:set", f"WEIRD={weird}", "PLAIN=1").returncode == 0
    run.wait_for(r"app\[api\]: Set WEIRD, PLAIN config vars by user", after_last=True)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    assert env_of(run.port)["WEIRD"] == weird and not os.path.exists("/tmp/pwned-by-config")
    assert run_dynosim(app, "config:get", "PLAIN").stdout == "1\n"
    for bad in ("NOEQUALS", "1BAD=x", "BAD-NAME=x"):
        result = run_dynosim(app, "config:set", bad)
        assert result.returncode == 1 and result.stderr.startswith("dynosim: error: ")
    releases = json.loads(run_dynosim(app, "releases", "--json").stdout)
    assert releases[0]["version"] == releases[1]["version"] + 1
    logs = json.loads(run_dynosim(app, "logs", "-n", "500", "--dyno", "api", "--json").stdout)
    assert logs and all(line["dyno"] == "api" for line in logs)
    resized = run_dynosim(app, "ps:resize", "web=standard-2x")
    assert resized.returncode == 0 and "web standard-2x" in resized.stdout
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    run.wait_for(r"app\[api\]: Scaled to web@2:Standard-2X worker@0:Standard-1X")
    env = env_of(run.port)
    assert env["WEB_CONCURRENCY"] == "4" and env["DYNO_RAM"] == "1024"  # the size's, after the restart
    bad = run_dynosim(app, "ps:resize", "web=huge")
    assert bad.returncode == 1 and 'unknown dyno size "huge"' in bad.stderr
    tail = subprocess.Popen(
        [sys.executable, "-m", "dynosim", "logs", "--tail", "-n", "1", "-C", str(app)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)},
    )
    tail.stdout.readline()  # the last line kept
    urllib.request.urlopen(f"http://127.0.0.1:{run.port}/tailed", timeout=10).read()
    deadline = time.monotonic() + 10
    seen = ""
    while "/tailed" not in seen and time.monotonic() < deadline:
        seen = tail.stdout.readline()  # streamed as it happens
    tail.kill()
    assert "/tailed" in seen
    restarted = run_dynosim(app, "restart", "web.2")
    assert restarted.returncode == 0 and "web.2" in restarted.stdout
    assert run.stop() == 0
    # with no run active: the stored state still answers, the rest says no run is active
    assert run_dynosim(app, "config:get", "PLAIN").stdout == "1\n"
    offline = run_dynosim(app, "ps")
    assert offline.returncode == 2 and "no dynosim run is active" in offline.stderr


def test_garbage_and_vanishing_clients_do_not_disturb_the_run(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="worker: python worker.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    control = str(app / ".dynosim" / "control.sock")
    assert oct(os.stat(control).st_mode & 0o777) == "0o600"
    for payload in (b"\x00\xffgarbage\n", b"{not json}\n", b'{"command": 3}\n', b"x" * 200_000, b""):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(control)
            client.sendall(payload)  # and vanish
    with socket.socket(socket.AF_UNIX) as half:  # a client that connects and never says anything
        half.connect(control)
        assert run_dynosim(app, "ps").returncode == 0
    assert run.stop() == 0


def test_a_stale_socket_of_a_killed_run_is_not_mistaken_for_a_run(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="worker: python worker.py\n")
    first = dynosim(app)
    first.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert (app / ".dynosim" / "control.sock").exists()  # left behind
    stale = run_dynosim(app, "ps")
    assert stale.returncode == 2 and "no dynosim run is active" in stale.stderr
    second = dynosim(app)
    second.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    assert run_dynosim(app, "ps").returncode == 0
    assert second.stop() == 0


def test_memory_quota_r14_then_r15(dynosim_app):
    app = dynosim_app(
        FIXTURES / "dynolab",
        formation="web=1,worker=0",
        cache_dir=CACHE_DIR,
        crash_backoff_scale=0.001,
        memory=MemoryPolicy(interval=0.2, runtime_metrics=True, quota_scale=0.1),  # a 51 MB quota
    )
    started = time.monotonic()
    status, _ = app.exec("python leak.py 10")  # a one-off dyno leaking 50 MB/s
    assert status == 137 and time.monotonic() - started < 60
    assert app.logs.search(r"heroku\[run\.\d{4}\]: Process running mem=\d+M\(1\d\d\.\d%\)")
    assert app.logs.search(r"heroku\[run\.\d{4}\]: Error R14 \(Memory quota exceeded\)")
    assert app.logs.search(r"heroku\[run\.\d{4}\]: Error R15 \(Memory quota vastly exceeded\)")
    assert app.logs.search(r"heroku\[run\.\d{4}\]: Stopping process with SIGKILL")
    assert app.logs.search(r"sample#memory_total=\d+\.\d\dMB sample#memory_rss=")


def test_an_app_folder_deeper_than_a_socket_address_is_operated_all_the_same(tmp_path, dynosim):
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / ("and-another-one-inside-it-" * 2)
    deep.mkdir(parents=True)
    app = make_app(deep, procfile="web: python server.py\n")
    assert len(str(app / ".dynosim" / "control.sock")) > 108  # past what an AF_UNIX path may be
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    ps = run_dynosim(app, "ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert [row["name"] for row in json.loads(ps.stdout)] == ["web.1"]
