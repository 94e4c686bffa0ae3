"""A stop signal while `dynosim run` is still starting (its build, before any dyno): the start is given
up, what it began is put away, and dynosim exits at once with 128 + the signal."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest
from conftest import make_app, need_docker, remove_app_containers

from dynosim.app import load_app

# a build that takes as long as the test wants: a hook whose child a shell forks, as real hooks do
HOOK = '#!/bin/sh\necho "hook started"\nsleep 600 &\necho "hook child $!"\nwait\n'

# a shell's background job (`dynosim run &` in a script) starts with SIGINT ignored
IGNORING_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.executable, sys.argv[1:])",
]


@pytest.mark.parametrize(
    ("signum", "python"),
    [(signal.SIGINT, None), (signal.SIGINT, IGNORING_SIGINT), (signal.SIGTERM, None)],
    ids=["sigint", "sigint-ignored-by-the-parent", "sigterm"],
)
def test_a_stop_signal_during_the_build_gives_up_the_start(tmp_path, dynosim, signum, python) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    (app / "bin").mkdir()
    (app / "bin" / "post_compile").write_text(HOOK)
    (app / "bin" / "post_compile").chmod(0o755)
    run = dynosim(app, python=python and [*python, sys.executable])
    child = int(run.wait_for(r"hook child (\d+)", timeout=120).group(1))
    assert psutil.pid_exists(child)
    os.kill(run.proc.pid, signum)
    assert run.proc.wait(30) == 128 + signum
    out = run.output()
    assert f"dynosim: interrupted by {signal.Signals(signum).name}" in out and "Traceback" not in out
    assert "Starting process" not in out  # no dyno, no release
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert not (load_app(app).state_dir / "run.json").exists()  # the next run need not wait for this one


def test_a_ctrl_c_while_a_docker_add_on_starts_leaves_no_container_running(tmp_path, dynosim, monkeypatch) -> None:
    """The kill trial's find: the container being made or waited on was not yet the run's to stop, and the
    run's end sent away the watcher that would have."""
    need_docker(monkeypatch)
    import docker

    from dynosim.addons.backends.docker import LABEL_APP, app_id

    app = make_app(tmp_path, procfile="web: python server.py\n", app__json='{"addons": ["heroku-postgresql"]}')
    state = load_app(app).state_dir
    try:
        run = dynosim(app, "--addons", "docker")
        run.wait_for(r"add-ons: docker backend", timeout=120)
        time.sleep(0.3)  # a new Postgres container takes a second to answer
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(60) == 130
        assert "dynosim: interrupted by SIGINT" in run.output() and "Traceback" not in run.output()
        client = docker.from_env()
        running = client.containers.list(filters={"label": f"{LABEL_APP}={app_id(state)}"})
        assert running == [], [c.name for c in running]
    finally:
        remove_app_containers(state)
