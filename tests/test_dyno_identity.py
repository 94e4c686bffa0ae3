"""Who and where a dyno is, as on Heroku: a non-root user (u<uid>), the slug at /app as $HOME and
the working directory, a UUID for a host name; and, where the kernel or the sandbox cannot give
one of these, one line at start saying which."""

from __future__ import annotations

import os
import re
import socket
import sys

from conftest import CACHE_DIR, make_app, run_dynosim

from dynosim.runtime.sandbox import SHARED_NETWORK

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
WHO = 'echo "who $(id -u) $(id -un) $(id -gn) $(hostname) $HOME $(pwd)"'
WHO_LINE = r"app\[{}\]: who (\d+) (\S+) (\S+) (\S+) (\S+) (\S+)"


def test_a_one_off_dyno_runs_as_herokus_dyno_user_at_app(tmp_path):
    app = make_app(
        tmp_path, **{"where.py": "import os\nprint(__file__, os.getcwd(), os.environ['PWD'], os.environ['HOME'])\n"}
    )
    result = run_dynosim(app, "exec", "--sandbox", "namespaces", f"{WHO}; python where.py; echo n > notes.txt")
    assert result.returncode == 0, result.stderr
    uid, user, group, hostname, home, cwd = re.search(
        r"who (\d+) (\S+) (\S+) (\S+) (\S+) (\S+)", result.stdout
    ).groups()
    assert uid != "0" and user == f"u{uid}" and group == "dyno"  # Heroku's passwd: u<uid> and dyno
    assert home == cwd == "/app"
    assert "/app/where.py /app /app /app" in result.stdout
    assert UUID.match(hostname) and hostname != socket.gethostname()
    assert "file: notes.txt (2 B)" in result.stderr  # the loss report sees the slug at /app
    assert not (app / "notes.txt").exists()


def test_each_dyno_has_its_own_uuid_and_user(tmp_path, dynosim):
    app = make_app(tmp_path, procfile=f"worker: {WHO}; sleep 600\n")
    run = dynosim(app, "--sandbox", "namespaces", "--formation", "worker=2")
    line = run.wait_for(r"dyno sandbox: namespaces \((.*)\)$").group(1)
    # a Heroku dyno in every way but one, which it says
    assert line == "user, mount, PID and UTS namespaces with overlayfs; unlike Heroku, " + SHARED_NETWORK
    one = run.wait_for(WHO_LINE.format(r"worker\.1")).groups()
    two = run.wait_for(WHO_LINE.format(r"worker\.2")).groups()
    assert one[3] != two[3] and UUID.match(one[3]) and UUID.match(two[3])
    assert one[0] != "0" and two[0] != "0"
    assert one[4:] == two[4:] == ("/app", "/app")
    assert run.stop() == 0


def test_a_dyno_cannot_change_the_cache_through_its_own_paths(tmp_path):
    """The cached slugs and dependency environments are in sight (shebangs point there) but
    read-only; what a dyno writes to its own venv lands in its own layer."""
    app = make_app(tmp_path)
    folders = f"{CACHE_DIR}/slugs/*/ {CACHE_DIR}/venvs/*/"
    script = f'for folder in {folders}; do echo x > "$folder"evil.txt; done; echo done'
    try:
        result = run_dynosim(app, "exec", "--sandbox", "namespaces", script)
        assert "done" in result.stdout and "Read-only file system" in result.stderr, result.stderr
        assert not list(CACHE_DIR.glob("*/*/evil.txt"))
    finally:  # the cache is the suite's
        for evil in CACHE_DIR.glob("*/*/evil.txt"):
            evil.unlink()


def test_copy_mode_says_at_start_what_differs_from_heroku(tmp_path, dynosim):
    app = make_app(tmp_path, procfile=f"worker: {WHO}; sleep 600\n")
    run = dynosim(app, "--sandbox", "copy")
    uid = run.wait_for(WHO_LINE.format(r"worker\.1")).group(1)
    assert run.stop() == 0
    notices = [line for line in run.lines if "dyno sandbox:" in line]
    assert len(notices) == 1
    who = "root" if os.geteuid() == 0 else "you"
    assert notices[0] == (
        f"dyno sandbox: copy (asked for with --sandbox copy; unlike Heroku, dynos run as {who}, in a copy of the slug "
        "rather than at /app, with this machine's host name; dynos share this machine's network, so a dyno's port "
        "answers without the router)"
    )
    assert uid == str(os.geteuid())


def test_a_part_the_kernel_refuses_is_said_once_and_the_rest_still_holds(tmp_path, dynosim):
    """A user namespace allowed only one more user namespace below it: the dyno's own (for its
    non-root user) is refused, so it runs as root there; /app and its host name still hold."""
    app = make_app(tmp_path, procfile=f"worker: {WHO}; sleep 600\n")
    private_tmp = tmp_path / "tmp"  # the probe's verdict is kept per temporary folder: not the suite's
    private_tmp.mkdir()
    limited = [
        "unshare",
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        'echo 1 > /proc/sys/user/max_user_namespaces && exec "$@"',
        "sh",
        sys.executable,
    ]
    # the kernel frees a user namespace after its last process, a moment later: the probe's can still count
    # when the first dyno starts, which then crashes; Heroku's back-off, shrunk, starts it again
    run = dynosim(
        app,
        "--sandbox",
        "namespaces",
        "--crash-backoff-scale",
        "0.001",
        python=limited,
        env={"TMPDIR": str(private_tmp)},
    )
    line = run.wait_for(r"dyno sandbox: namespaces \((.*)\)$").group(1)
    assert re.fullmatch(
        r"user, mount, PID and UTS namespaces with overlayfs; unlike Heroku, dynos run as root in their namespace "
        r"\(.*No space left on device.*\); dynos share this machine's network, so a dyno's port answers without "
        r"the router",
        line,
    ), line
    uid, _user, _group, hostname, home, cwd = run.wait_for(WHO_LINE.format(r"worker\.1")).groups()
    assert uid == "0" and home == cwd == "/app" and UUID.match(hostname)
    assert run.stop() == 0
    assert sum("dyno sandbox:" in line for line in run.lines) == 1


def test_a_dyno_folder_beside_its_slug_still_boots():
    """The cached slugs are read-only to a dyno; a dyno's own folder next to its slug (both under one
    folder, as the cycle benchmark has them) must stay writable for its layer."""
    import asyncio
    import shutil
    import tempfile
    from pathlib import Path

    from dynosim.buildpack import Slug
    from dynosim.runtime.sandbox import choose_sandbox

    async def boot() -> int:
        slug_dir = tmp_path / "slug"
        slug_dir.mkdir()
        (slug_dir / "app.py").write_text("")
        sandbox = choose_sandbox("auto", tmp_path / "run", ())
        slug = Slug(id="beside", path=slug_dir, venv=None, python_version="3.11", commit=None, description="d")
        fs = sandbox.fresh("web.1", slug)
        proc = await sandbox.spawn(fs, "touch written && test -f written", {"PATH": os.environ["PATH"]}, "beside")
        if proc.proc.stdout is not None:
            await proc.proc.stdout.read()
        code = await proc.wait()
        sandbox.wipe(fs)
        return code

    tmp_path = Path(tempfile.mkdtemp(dir=CACHE_DIR.parent))  # not under /tmp: a dyno has its own /tmp
    try:
        assert asyncio.run(boot()) == 0
    finally:
        shutil.rmtree(tmp_path)
