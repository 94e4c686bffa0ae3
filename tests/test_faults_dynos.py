"""The dyno fault kinds against a real run: dyno-hang (SIGSTOP, the router's H12, SIGCONT), dyno-cycle
(Heroku's daily cycle now, R12 for an app that ignores SIGTERM), deploy-restart (every dyno at once),
memory-pressure (the memory monitor's own R14 and R15), with --probability and --for on them."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import DynosimRun, make_app, run_dynosim

STUBBORN = "web: python server.py\nworker: python stubborn.py\n"


def get(port: int, path: str = "/", timeout: float = 60) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def add(app: Path, *args: str) -> str:
    done = run_dynosim(app, "faults:add", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def draws(seed: int, count: int, probability: float) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < probability for _ in range(count)]


def up(run: DynosimRun, name: str, timeout: float = 120) -> None:
    run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from starting to up", timeout=timeout, after_last=True)


def test_dyno_cycle_is_herokus_cycle_now_with_r12_for_an_app_ignoring_sigterm(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = make_app(tmp_path, procfile=STUBBORN)
    run = dynosim(app, "--formation", "web=1,worker=1", "--stop-timeout", "1")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=120)
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up", timeout=60)

    assert add(app, "dyno-cycle", "--target", "worker.1", "--seed", "3").startswith("Adding dyno-cycle on worker.1")
    run.wait_for(r"dynosim\[faults\]: f1 dyno-cycle on worker\.1 started \(seed 3\)", after_last=True)
    for line in (
        r"heroku\[worker\.1\]: Cycling$",
        r"heroku\[worker\.1\]: State changed from up to starting",
        r"heroku\[worker\.1\]: Stopping all processes with SIGTERM",
        r"app\[worker\.1\]: ignoring SIGTERM",
        r"heroku\[worker\.1\]: Error R12 \(Exit timeout\) -> At least one process failed to exit within 1 seconds "
        r"of SIGTERM",
        r"heroku\[worker\.1\]: Stopping remaining processes with SIGKILL",
        r"heroku\[worker\.1\]: Process exited with status 137",
        r"heroku\[worker\.1\]: Starting process with command `python stubborn\.py`",
    ):
        run.wait_for(line, timeout=20, after_last=True)
    up(run, "worker.1", 30)
    run.wait_for(r"dynosim\[faults\]: f1 dyno-cycle on worker\.1 ended \(done, after \d+\.\ds\)")
    assert "heroku[web.1]: Cycling" not in run.output()  # one dyno, the one named

    # a process type cycles each of its dynos; the web server exits on SIGTERM, so no R12
    add(app, "dyno-cycle", "--target", "web")
    run.wait_for(r"heroku\[web\.1\]: Cycling$", timeout=20)
    run.wait_for(r"heroku\[web\.1\]: Process exited with status 0", timeout=20, after_last=True)
    up(run, "web.1", 30)
    assert get(run.port)[0] == 200
    assert "heroku[web.1]: Error R12" not in run.output()
    assert json.loads(run_dynosim(app, "faults", "--json").stdout) == []  # one-shot: over once it struck
    assert run.stop() == 0


def test_deploy_restart_restarts_every_dyno_at_once_without_a_release(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    run = dynosim(app, "--formation", "web=2,worker=1", "--stop-timeout", "2")
    for name in ("web.1", "web.2", "worker.1"):
        run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from starting to up", timeout=120)
    releases = run_dynosim(app, "releases", "--json").stdout

    add(app, "deploy-restart")
    run.wait_for(r"dynosim\[faults\]: f1 deploy-restart started", after_last=True)
    run.wait_for(r"dynosim\[faults\]: f1: restarting web\.1, web\.2, worker\.1, as a deploy does", after_last=True)
    for name in ("web.1", "web.2", "worker.1"):
        run.wait_for(rf"heroku\[{re.escape(name)}\]: Restarting$", timeout=20)
        run.wait_for(rf"heroku\[{re.escape(name)}\]: Stopping all processes with SIGTERM", timeout=20)
    run.wait_for(r"dynosim\[faults\]: f1 deploy-restart ended \(done", timeout=20)
    for name in ("web.1", "web.2", "worker.1"):
        run.wait_for(rf"heroku\[{re.escape(name)}\]: State changed from starting to up", timeout=30, after_last=False)
    assert run_dynosim(app, "releases", "--json").stdout == releases  # no new release
    assert get(run.port)[0] == 200

    # a process type: only its dynos
    before = len(re.findall(r"heroku\[worker\.1\]: Restarting", run.output()))
    add(app, "deploy-restart", "--target", "web")
    run.wait_for(r"dynosim\[faults\]: f2 deploy-restart on web ended \(done", timeout=20)
    assert len(re.findall(r"heroku\[web\.1\]: Restarting", run.output())) == 2
    assert len(re.findall(r"heroku\[worker\.1\]: Restarting", run.output())) == before

    # one dyno is not what a deploy restarts
    refused = run_dynosim(app, "faults:add", "deploy-restart", "--target", "web.1")
    assert refused.returncode != 0 and "give a type like web" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert run.stop() == 0


def test_probability_strikes_each_dyno_by_the_seeded_rng_and_for_repeats_a_one_shot(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--formation", "web=3", "--stop-timeout", "1")
    for index in (1, 2, 3):
        run.wait_for(rf"heroku\[web\.{index}\]: State changed from starting to up", timeout=120)
    # the board's rng, seeded: one draw per dyno, in the formation's order
    seed = next(s for s in range(100) if draws(s, 3, 0.5) == [True, False, True])
    add(app, "deploy-restart", "--target", "web", "--probability", "0.5", "--seed", str(seed))
    run.wait_for(r"dynosim\[faults\]: f1: restarting web\.1, web\.3, as a deploy does")
    run.wait_for(r"dynosim\[faults\]: f1 deploy-restart on web at p=0\.5 ended \(done", timeout=20)
    assert "heroku[web.2]: Restarting" not in run.output()

    # --for on a one-shot kind: a strike a second while it lasts
    add(app, "dyno-cycle", "--target", "web.2", "--for", "2.5s")
    run.wait_for(r"dynosim\[faults\]: f2 dyno-cycle on web\.2 for 2\.5s ended \(over, after \d\.\ds\)", timeout=30)
    assert len(re.findall(r"heroku\[web\.2\]: Cycling", run.output())) >= 2
    assert run.stop() == 0


def test_dyno_hang_stops_the_dyno_the_router_answers_h12_and_it_serves_again(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--formation", "web=1")
    up(run, "web.1")
    assert get(run.port)[0] == 200

    # Heroku's router waits 30 s for a first byte
    add(app, "dyno-hang", "--target", "web.1", "--for", "32s")
    run.wait_for(r"dynosim\[faults\]: f1 dyno-hang on web\.1 for 32s started")
    run.wait_for(r"dynosim\[faults\]: f1: SIGSTOP to web\.1 \(\d+ process(es)?\)")
    started = time.monotonic()
    status, body = get(run.port, "/hung")
    assert status == 503 and 29 < time.monotonic() - started < 33, (status, body)
    run.wait_for(r'heroku\[router\]: at=error code=H12 desc="Request timeout" method=GET path="/hung" .*dyno=web\.1 ')
    run.wait_for(r"dynosim\[faults\]: f1: SIGCONT to web\.1", timeout=10)
    run.wait_for(r"dynosim\[faults\]: f1 dyno-hang on web\.1 for 32s ended \(over, after 32\.\ds\)")
    assert get(run.port)[0] == 200
    assert "heroku[web.1]: State changed from up" not in run.output()  # hung, never down
    assert run.stop() == 0


def test_a_removed_hang_lets_the_waiting_request_through(tmp_path: Path, dynosim: type[DynosimRun]) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    up(run, "web.1")
    with_id = add(app, "dyno-hang", "--target", "web")
    assert re.search(r"done, f1 ", with_id)
    answers: list[tuple[int, str]] = []
    waiting = threading.Thread(target=lambda: answers.append(get(run.port, "/late")))
    waiting.start()
    waiting.join(2)
    assert waiting.is_alive()  # nothing answers a stopped dyno
    assert [f["kind"] for f in json.loads(run_dynosim(app, "faults", "--json").stdout)] == ["dyno-hang"]
    assert run_dynosim(app, "faults:remove", "f1").returncode == 0
    waiting.join(10)
    assert answers and answers[0][0] == 200
    run.wait_for(r"dynosim\[faults\]: f1: SIGCONT to web\.1")
    run.wait_for(r"dynosim\[faults\]: f1 dyno-hang on web ended \(removed")
    run.wait_for(r"app\[web\.1\]: GET /late")

    # the run's end continues a hung dyno first, so it stops as Heroku stops it (SIGTERM, exit 0)
    add(app, "dyno-hang", "--target", "web.1")
    run.wait_for(r"dynosim\[faults\]: f2: SIGSTOP to web\.1")
    assert run.stop() == 0
    output = run.output()
    assert re.search(r"f2 dyno-hang on web\.1 ended \(cleared", output)
    assert "heroku[web.1]: Error R12" not in output and "heroku[web.1]: Process exited with status 0" in output


def test_a_hung_dyno_that_dies_leaves_its_waiting_request_h13(tmp_path: Path, dynosim: type[DynosimRun]) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    up(run, "web.1")
    add(app, "dyno-hang", "--target", "web.1")
    answers: list[tuple[int, str]] = []
    waiting = threading.Thread(target=lambda: answers.append(get(run.port, "/doomed")))
    waiting.start()
    waiting.join(1)
    assert waiting.is_alive()
    add(app, "dyno-crash", "--target", "web.1")  # SIGKILL ends even a stopped process
    waiting.join(10)
    assert answers and answers[0][0] == 503
    run.wait_for(
        r'heroku\[router\]: at=error code=H13 desc="Connection closed without response" method=GET path="/doomed"'
    )
    up(run, "web.1", 30)
    assert run_dynosim(app, "faults:remove", "f1").returncode == 0
    run.wait_for(r"dynosim\[faults\]: f1 dyno-hang on web\.1 ended \(removed")
    assert "f1: SIGCONT" not in run.output()  # the processes it stopped are gone; the new dyno was never stopped
    assert get(run.port)[0] == 200
    assert run.stop() == 0


# the memory monitor's lines, as it prints them for a real leak (tests/test_control.py's leak.py)
RUNNING = r"heroku\[web\.1\]: Process running mem=\d+M\((\d+\.\d)%\)"


def percent(running: re.Match[str]) -> float:
    return float(running.group(1))


def test_memory_pressure_is_r14_and_lasting_r15_from_the_memory_monitor(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)  # the first crash restarts at once, by Heroku's crash policy
    up(run, "web.1")

    add(app, "memory-pressure", "--target", "web.1")
    run.wait_for(r"dynosim\[faults\]: f1: web\.1's memory quota lowered to \d+\.\d MB \(it uses \d+\.\d MB\)")
    running = run.wait_for(RUNNING, timeout=10, after_last=True)
    assert 110 < percent(running) < 140
    run.wait_for(r"heroku\[web\.1\]: Error R14 \(Memory quota exceeded\)$", timeout=5, after_last=True)
    assert get(run.port)[0] == 200  # R14: the dyno goes on
    assert run_dynosim(app, "faults:remove", "f1").returncode == 0
    run.wait_for(r"dynosim\[faults\]: f1: web\.1's memory quota is 512 MB again")
    run.wait_for(r"dynosim\[faults\]: f1 memory-pressure on web\.1 ended \(removed")
    assert "R15" not in run.output()

    # lasting: halfway through, past the R15 limit (2x the quota on standard-1x)
    add(app, "memory-pressure", "--target", "web.1", "--for", "3s")
    run.wait_for(r"heroku\[web\.1\]: Error R14 \(Memory quota exceeded\)$", timeout=10, after_last=True)
    run.wait_for(r"dynosim\[faults\]: f2: web\.1's memory quota lowered", timeout=5, after_last=True)
    vast = run.wait_for(RUNNING, timeout=10, after_last=True)
    assert percent(vast) > 200
    for line in (
        r"heroku\[web\.1\]: Error R15 \(Memory quota vastly exceeded\)$",
        r"heroku\[web\.1\]: Stopping process with SIGKILL",
        r"heroku\[web\.1\]: Process exited with status 137",
        r"heroku\[web\.1\]: State changed from up to crashed",
        r"heroku\[web\.1\]: State changed from crashed to starting",
    ):
        run.wait_for(line, timeout=10, after_last=True)
    up(run, "web.1", 30)
    run.wait_for(r"dynosim\[faults\]: f2 memory-pressure on web\.1 for 3s ended \(over", timeout=10)
    assert get(run.port)[0] == 200  # the new dyno, at its own quota
    assert run.stop() == 0
