"""A stop signal while `dynosim run` is still starting (its build, before any dyno): the start is given
up, what it began is put away, and dynosim exits at once with 128 + the signal."""

from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest
from conftest import make_app

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
