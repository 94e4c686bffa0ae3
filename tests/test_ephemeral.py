"""The ephemeral filesystem: fresh at every boot, private to each dyno, wiped safely, and
every write a restart loses named with its fix."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import pexpect
import pytest
from conftest import CACHE_DIR, make_app, run_dynosim

from dynosim.ephemeral import Ledger, classify
from dynosim.logs import LogStream
from dynosim.runtime.sandbox import DynoFilesystem, Layer, wipe_dir

SANDBOXES = ["namespaces", "copy"]


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_cycle_is_a_full_restart_that_loses_what_the_dyno_wrote(tmp_path, dynosim, sandbox):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--sandbox", sandbox, "--cycle-every", "4s", "--no-jitter")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    get(run.port, "/write/notes.txt")
    get(run.port, "/sqlite/data.db")
    assert get(run.port, "/read/notes.txt") == "written by web.1"
    run.wait_for(r"heroku\[web\.1\]: Cycling", timeout=15, after_last=True)
    for line in (
        r"heroku\[web\.1\]: State changed from up to starting",
        r"heroku\[web\.1\]: Stopping all processes with SIGTERM",
        r"heroku\[web\.1\]: Process exited with status 0",
        r"dynosim\[web\.1\]: the daily cycle discards 2 file\(s\) web\.1 wrote",
        r"dynosim\[web\.1\]:   SQLite database: data\.db \(\d+\.\d KB\) -> keep data in Postgres",
        r"dynosim\[web\.1\]:   file: notes\.txt \(16 B\)",
        r"heroku\[web\.1\]: Starting process with command `python server.py`",
        r"heroku\[web\.1\]: State changed from starting to up",
    ):
        run.wait_for(line, after_last=True)
    assert get(run.port, "/read/notes.txt") == "missing"
    assert get(run.port, "/read/data.db") == "missing"
    assert not (app / "notes.txt").exists()
    assert run.stop() == 0


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_every_dyno_has_its_own_filesystem_and_tmp(tmp_path, dynosim, sandbox):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--sandbox", sandbox, "--formation", "web=2")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    web1 = int(run.wait_for(r"app\[web\.1\]: listening on (\d+)").group(1))  # each dyno's own port
    web2 = int(run.wait_for(r"app\[web\.2\]: listening on (\d+)").group(1))
    get(web1, "/write/notes.txt")
    assert get(web1, "/read/notes.txt") == "written by web.1"
    assert get(web2, "/read/notes.txt") == "missing"
    # each dyno's own TMPDIR (in namespaces mode a private /tmp; in copy mode a TMPDIR of its own)
    tmp1 = json.loads(get(web1, "/"))["env"].get("TMPDIR", "/tmp")
    tmp2 = json.loads(get(web2, "/"))["env"].get("TMPDIR", "/tmp")
    get(web1, f"/write/{tmp1}/scratch.txt")
    assert get(web1, f"/read/{tmp1}/scratch.txt") == "written by web.1"
    assert get(web2, f"/read/{tmp2}/scratch.txt") == "missing"
    oneoff = run_dynosim(app, "exec", "--sandbox", sandbox, "cat notes.txt /tmp/scratch.txt")
    assert oneoff.returncode == 1 and "No such file" in oneoff.stdout + oneoff.stderr
    assert run.stop() == 0


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_wipe_never_follows_a_symlink_out_of_the_dyno(tmp_path, sandbox):
    app = make_app(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    script = "; ".join(
        [
            f"ln -s {outside} to-outside",
            f"ln -s {app} to-app",
            "ln -s / to-root",
            'ln -s "$HOME" to-home',
            f"ln -s {outside}/precious.txt /tmp/to-file",
            "mkdir -p deep/er && ln -s / deep/er/root",
            "echo written > deep/er/file.txt",
        ]
    )
    result = run_dynosim(app, "exec", "--sandbox", sandbox, script)
    assert result.returncode == 0, result.stderr
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (app / "server.py").exists() and (app / "Procfile").exists()
    assert not (app / "to-outside").exists() and not (app / "deep").exists()
    assert Path("/bin/sh").exists()
    slugs = [p for p in (CACHE_DIR / "slugs").iterdir() if not p.name.startswith(".")]
    assert all(not (slug / "to-root").exists() for slug in slugs)


def test_wipe_dir_stays_inside_its_root(tmp_path):
    root = tmp_path / "root"
    inside = root / "dyno"
    inside.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("x")
    wipe_dir(victim, root)  # not under root: refused
    assert (victim / "file").exists()
    link = root / "link"
    link.symlink_to(victim)
    wipe_dir(link, root)  # a symlink itself: refused
    assert (victim / "file").exists()
    (inside / "escape").symlink_to(victim)
    wipe_dir(inside, root)
    assert not inside.exists() and (victim / "file").exists()


def test_the_ledger_sees_a_write_within_a_second(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ledger = Ledger(LogStream())
    fs = DynoFilesystem(home, None, tmp_path, (Layer(home, home),), None)
    ledger.watch("k", "web.1", fs)
    try:
        started = time.monotonic()
        (home / "uploads").mkdir()
        (home / "uploads" / "cat.png").write_bytes(b"\x89PNG....")
        (home / "__pycache__").mkdir()
        (home / "__pycache__" / "x.pyc").write_bytes(b"noise")
        while not any(w.path.endswith("cat.png") for w in ledger.writes):
            assert time.monotonic() - started < 1.0
            time.sleep(0.005)
        losses = ledger.unwatch("k")
    finally:
        ledger.close()
    assert [(loss.path, loss.kind) for loss in losses] == [("uploads/cat.png", "upload")]
    assert not any("__pycache__" in w.path for w in ledger.writes)


@pytest.mark.parametrize(
    ("path", "content", "kind"),
    [
        ("db.sqlite3", b"SQLite format 3\x00" + b"\x00" * 100, "sqlite"),
        ("data/anything.bin", b"SQLite format 3\x00" + b"\x00" * 100, "sqlite"),  # by content, not name
        ("db.sqlite3", b"not really", "other"),
        ("logs/app.txt", b"x", "log"),
        ("app.log", b"x", "log"),
        ("app.log.1", b"x", "log"),
        ("media/avatar.jpg", b"x", "upload"),
        ("locale/fr/LC_MESSAGES/django.mo", b"x", "compiled"),
        ("static/app.min.js", b"x", "compiled"),
        ("notes.txt", b"x", "other"),
    ],
)
def test_kinds_of_state_are_recognised(tmp_path, path, content, kind):
    from pathlib import PurePosixPath

    host = tmp_path / path
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_bytes(content)
    assert classify(PurePosixPath("/app") / path, host) == kind


def test_strict_fails_the_run_and_the_json_report_names_the_state(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    report = tmp_path / "report.json"
    run = dynosim(app, "--strict", "--report-json", str(report))
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    get(run.port, "/sqlite/app.db")
    get(run.port, "/write/server.log")
    assert run.stop() == 3
    assert "--strict: dynos wrote 2 file(s) that Heroku would lose" in run.output()
    data = json.loads(report.read_text())
    kinds = {loss["path"]: (loss["kind"], loss["fix"]) for loss in data["losses"]}
    assert kinds["app.db"][0] == "sqlite" and "DATABASE_URL" in kinds["app.db"][1]
    assert kinds["server.log"][0] == "log" and "stdout" in kinds["server.log"][1]
    assert any(w["path"].endswith("app.db") and w["dyno"] == "web.1" for w in data["writes"])


def test_nested_folders_made_at_once_are_watched_without_noise(tmp_path, dynosim):
    """watchdog warns (a 1,000-character RuntimeWarning on stderr) when `mkdir -p` makes a folder and its
    children before it watches them; dynosim's output stays Heroku's lines, and the files are still seen."""
    procfile = (
        "worker: for i in $(seq 20); do mkdir -p d$i/a/b/c/d; done; echo x > d20/a/b/c/d/f.txt; echo made; sleep 600\n"
    )
    run = dynosim(make_app(tmp_path, procfile=procfile))
    run.wait_for(r"app\[worker\.1\]: made")
    time.sleep(1)  # the ledger's events come within a second
    assert run.stop() == 0
    out = run.output()  # stdout and stderr together
    assert "RuntimeWarning" not in out and "already exists" not in out  # (the build may warn, in Heroku's words)
    assert "file: d20/a/b/c/d/f.txt" in out


def test_a_clean_app_passes_strict(tmp_path, dynosim):
    """Scratch in /tmp is what Heroku's /tmp is for: said, in one line, and no failure."""
    run = dynosim(
        make_app(tmp_path, procfile="web: python server.py\n"), "--strict", "--report-json", str(tmp_path / "r.json")
    )
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    tmp = json.loads(get(run.port, "/"))["env"].get("TMPDIR", "/tmp")
    get(run.port, f"/write/{tmp}/resized.png")
    assert run.stop() == 0
    [line] = [line for line in run.lines if "dynosim[web.1]" in line]
    assert re.search(
        r"dynosim\[web\.1\]: the stop discards 1 scratch file\(s\) web\.1 wrote to (/tmp|\$TMPDIR), as Heroku "
        r"does \(fine for files needed only while the dyno runs\): (/tmp|\$TMPDIR)/resized\.png \(16 B\)$",
        line,
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["losses"] == [] and [s["path"].rsplit("/", 1)[1] for s in report["scratch"]] == ["resized.png"]


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_an_interactive_one_off_leaves_scratch_and_history_not_state(tmp_path, sandbox):
    """`heroku run python`: what the session wrote to /tmp is discarded scratch, its .python_history is noise."""
    app = make_app(tmp_path)
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "dynosim", "exec", "--sandbox", sandbox, "python"],
        cwd=str(app),
        env=env,
        timeout=60,
        encoding="utf-8",
    )
    try:
        child.expect(">>> ")
        child.sendline('import tempfile; open(tempfile.gettempdir() + "/scratch.txt", "w").write("scratch")')
        child.expect(">>> ")
        child.sendline("exit()")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    out = child.before
    assert child.exitstatus == 0
    where = "$TMPDIR" if sandbox == "copy" else "/tmp"
    assert ("the end of this one-off dyno discards 1 scratch file(s) run.") in out
    assert (
        f"wrote to {where}, as Heroku does (fine for files needed only while the dyno runs): {where}/scratch.txt (7 B)"
        in out
    )
    assert "python_history" not in out and "add-on" not in out and "gone too" not in out


def test_a_one_off_that_also_wrote_state_hears_both(tmp_path):
    script = 'echo note > notes.txt; echo s > "${TMPDIR:-/tmp}/s.txt"; echo ls >> .bash_history; mkdir -p .cache/x && echo c > .cache/x/c'
    result = run_dynosim(app := make_app(tmp_path), "exec", script)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("dynosim: ")][-3:]
    assert re.search(
        r"the end of this one-off dyno discards 1 file\(s\) run\.\d+ wrote since it booted; on Heroku", said[0]
    )
    assert "  file: notes.txt (5 B) -> anything that must outlive a restart belongs in an add-on" in said[1]
    assert re.search(
        r"discards 1 scratch file\(s\) run\.\d+ wrote to (/tmp|\$TMPDIR), .*: (/tmp|\$TMPDIR)/s\.txt \(2 B\)$", said[2]
    )
    assert not (app / "notes.txt").exists()


def test_exec_is_heroku_run(tmp_path):
    app = make_app(tmp_path, procfile="web: python server.py\ntask: python crash.py\n")
    (app / ".env").write_text("GREETING=hi\n")
    result = run_dynosim(
        app,
        "exec",
        "echo \"$DYNO $GREETING\"; python -c \"import sqlite3; sqlite3.connect('x.db').execute('create table t(a)')\"; exit 4",
    )
    assert result.returncode == 4
    assert re.search(r"^run\.\d{4} hi$", result.stdout, re.M)
    assert re.search(r"Running `.*` on ⬢ app\.\.\. up, run\.\d{4}", result.stderr)
    assert "SQLite database: x.db" in result.stderr and not (app / "x.db").exists()
    substituted = run_dynosim(app, "exec", "task", "7")  # a Procfile type runs its command, args appended
    assert substituted.returncode == 7 and "crashing with 7" in substituted.stdout


def test_exec_gives_an_interactive_terminal(tmp_path):
    app = make_app(tmp_path)
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), "PS1": "$ "}
    child = pexpect.spawn(
        sys.executable, ["-m", "dynosim", "exec", "bash"], cwd=str(app), env=env, timeout=60, encoding="utf-8"
    )
    try:
        child.expect(r"up, run\.\d{4}")
        child.sendline("tty; echo dyno=$DYNO")
        child.expect(r"/dev/pts/\d+")
        child.expect(r"dyno=run\.\d{4}")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5
