"""What issue 22's kill and wipe trials (trials/kill.py, trials/wipe.py) found, kept found: hostile dyno
content that made a wipe fail, and what a killed run left running."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, DynosimRun, make_app

from dynosim.buildpack import build_slug
from dynosim.ephemeral import Ledger
from dynosim.logs import LogStream
from dynosim.runtime.sandbox import DynoFilesystem, Layer, wipe_dir

DEPTH = 10_000  # the wipe trial's tree: 20,000 bytes of path, five times PATH_MAX


def deep_tree(base: Path) -> None:
    """DEPTH folders, each made relative to the last (as a dyno can), a file at the bottom."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEPTH):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def outside(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, bytes]]]:
    folder = tmp_path / "outside"
    (folder / "inner").mkdir(parents=True)
    (folder / "keep.txt").write_text("not the dyno's")
    (folder / "inner" / "deeper.txt").write_text("nor this")
    past = time.time() - 3600
    for path in (folder / "keep.txt", folder / "inner" / "deeper.txt"):
        os.utime(path, (past, past))
    return folder, seen(folder)


def seen(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*.txt")}


def test_a_wipe_removes_a_hostile_dyno_folder_whole_and_nothing_outside_it(tmp_path: Path) -> None:
    # the wipe trial's 10,000-deep tree was a RecursionError in shutil.rmtree: the dyno's folder stayed
    folder, before = outside(tmp_path)
    root = tmp_path / "run"
    dyno = root / "web.1-abc123"
    home = dyno / "app"
    home.mkdir(parents=True)
    deep_tree(home)
    (home / "out-dir").symlink_to(folder)
    (home / "out-file").symlink_to(folder / "keep.txt")
    os.link(folder / "keep.txt", home / "hard-link")
    odd = home / "odd"
    odd.mkdir()
    for name in (b"new\nline", b"\xff\xfe not utf-8", b"-rf", b"x" * 255):
        with open(os.fsencode(odd) + b"/" + name, "wb") as handle:
            handle.write(name)
    readonly = home / "readonly"
    (readonly / "inner").mkdir(parents=True)
    (readonly / "a.txt").write_text("a")
    (readonly / "inner" / "b.txt").write_text("b")
    (readonly / "out").symlink_to(folder)
    os.chmod(readonly / "inner", 0)
    os.chmod(readonly, 0o500)

    wipe_dir(dyno, root)

    assert not os.path.lexists(dyno)
    assert seen(folder) == before


def test_the_ledger_watches_and_reports_a_dyno_with_a_10000_deep_tree(tmp_path: Path) -> None:
    # its os.walk, and watchdog's, were a RecursionError: in the dyno's end, so the wipe after it never ran, and
    # in the reader thread every watch shares, a traceback and no more writes seen for the run
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ledger = Ledger(LogStream())
    fs = DynoFilesystem(tmp_path / "home", None, tmp_path, (Layer(tmp, Path("/tmp")),), None)
    ledger.watch("k", "web.1", fs)
    try:
        deep_tree(tmp)  # made by the dyno, while it runs
        (tmp / "scratch.txt").write_text("x")
        # watchdog's reader thread, which os.walk's recursion ended, still sees what the dyno writes
        deadline = time.monotonic() + 60
        while not any(w.path == "/tmp/scratch.txt" for w in ledger.writes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(w.path == "/tmp/scratch.txt" for w in ledger.writes)
        losses = ledger.unwatch("k")
    finally:
        ledger.close()
        wipe_dir(tmp, tmp_path)  # pytest's own cleanup of tmp_path cannot remove it: shutil.rmtree's recursion
        wipe_dir(tmp, tmp_path)  # pytest's clean-up of old temp folders recurses: 10,000 levels break it
    assert [loss.path for loss in losses if loss.path.endswith("scratch.txt")] == ["/tmp/scratch.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a folder takes root, as a copy-mode dyno run by root has")
def test_a_wipe_detaches_a_folder_a_dyno_bound_into_its_own_and_leaves_that_folder_whole(tmp_path: Path) -> None:
    # a copy-mode dyno as root bound an outside folder into its home: the wipe raised, which ended ps:restart
    folder, before = outside(tmp_path)
    root = tmp_path / "run"
    bound = root / "web.1-abc123" / "app" / "bound"
    bound.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(folder), str(bound)], check=True)
    try:
        wipe_dir(root / "web.1-abc123", root)
    finally:
        mounted = subprocess.run(["mountpoint", "-q", str(bound)], check=False).returncode == 0
        if mounted:
            subprocess.run(["umount", "-l", str(bound)], check=False)
    assert not mounted
    assert not os.path.lexists(root / "web.1-abc123")
    assert seen(folder) == before


def test_a_copy_mode_daemon_dies_with_a_supervisor_killed_with_sigkill(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    # it outlived dynosim until the app's next run (the kill trial: SIGKILL at any moment, --sandbox copy)
    run = dynosim(make_app(tmp_path, procfile="web: python forker.py\n"), "--sandbox", "copy")
    daemon = psutil.Process(int(run.wait_for(r"daemon pid (\d+)").group(1)))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.proc.kill()
    run.proc.wait()
    psutil.wait_procs([daemon], timeout=30)
    assert not daemon.is_running()


def test_a_build_folder_a_killed_build_left_goes_at_the_next_build_and_a_running_ones_stays(tmp_path: Path) -> None:
    # a SIGKILL of dynosim mid-build left .build-* in the slug cache for good (the kill trial: SIGKILL during build)
    app = tmp_path / "app"
    shutil.copytree(ROOT / "tests" / "apps" / "hello", app)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(app), *args], check=True, capture_output=True)
    slugs = tmp_path / "cache" / "slugs"
    dead, running = slugs / ".build-dead0001", slugs / ".build-live0001"
    for folder in (dead, running):
        (folder / "half").mkdir(parents=True)
        old = time.time() - 3600
        os.utime(folder, (old, old))
    held = os.open(running, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a build still running holds its folder
    try:
        build_slug(app, cache_dir=tmp_path / "cache", say=lambda line: None)
        assert not dead.exists()
        assert (running / "half").is_dir()
    finally:
        os.close(held)


DEEP_WORKER = (
    """import os
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(%d):
    os.mkdir("d", dir_fd=fd)
    inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = inner
print("deep tree made", flush=True)
"""
    % DEPTH
)


def test_the_router_serves_while_a_dyno_with_a_10000_deep_tree_is_wiped(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    """The wipe trial's find: the dyno's wipe ran on the loop the router shares, which stood still for it."""
    import urllib.request

    app = make_app(tmp_path, procfile="web: python server.py\nworker: python deep.py\n", deep__py=DEEP_WORKER)
    run = dynosim(app, "--sandbox", "copy", "--crash-backoff-scale", "0.001")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"app\[worker\.1\]: deep tree made", timeout=120)
    run.wait_for(r"heroku\[worker\.1\]: Process exited with status 0")
    served = 0
    while not any("heroku[worker.1]: State changed from up to crashed" in line for line in run.lines):
        with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/", timeout=30) as response:
            served += response.status == 200
        run.drain()
    lines = run.output().splitlines()
    start = next(i for i, line in enumerate(lines) if "heroku[worker.1]: Process exited with status 0" in line)
    end = next(i for i, line in enumerate(lines) if "heroku[worker.1]: State changed from up to crashed" in line)
    assert any("heroku[router]: " in line and 'path="/"' in line for line in lines[start:end]), lines[start:end]
    assert served and run.stop() == 0
