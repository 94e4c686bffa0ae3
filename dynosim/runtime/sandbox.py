"""A dyno's fresh filesystem and process containment, in two modes behind one interface.

namespaces: each dyno is a user+mount+PID+UTS namespace; its filesystem is a root of its own
with an overlay of the slug at /app (writes land in a per-dyno upper dir) and a private /tmp,
its command runs as a non-root user with a UUID for a host name, as on Heroku (dynoinit says
how; a part the kernel refuses is left out, and said once). The kernel ends every process of
the dyno with its PID 1, and a parent-death signal chains that to the supervisor. copy: the
dyno gets a copy of the slug and its own session, and psutil ends whatever it started, found by
a marker in the environment it inherited; its command runs under dynoinit's keeper, a subreaper
that ends every process left under it should dynosim die without a stop (a SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import marshal
import os
import random
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..buildpack import Slug
from ..errors import DynosimError

if TYPE_CHECKING:  # psutil is imported where it is used: a run's first dyno starts without it
    import psutil

INIT = Path(__file__).with_name("dynoinit.py")
MARKER = "DYNOSIM_DYNO_ID"
OWNER = ".owner"  # in a dyno's folder, beside what the dyno sees: "pid identity" of the run that made it
_PR_SET_PDEATHSIG = 1
APP = Path("/app")  # where a Heroku dyno has its slug: $HOME and the working directory
# what each part of a Heroku dyno that the kernel may refuse is replaced by, when it does
_WITHOUT = {
    "root": "the slug is at its cache path, not /app",
    "user": "dynos run as root in their namespace",
    "hostname": "dynos have this machine's host name",
}
# said in every mode: a network namespace of its own would cut a dyno off from its add-ons on 127.0.0.1
# and from the internet, short of a user-space network stack (pasta, slirp4netns) per dyno
SHARED_NETWORK = "dynos share this machine's network, so a dyno's port answers without the router"


@dataclass(frozen=True)
class Layer:
    """A directory that receives what a dyno writes (`host`), and where the dyno sees it."""

    host: Path
    seen_as: Path
    exact: bool = True  # holds only what the dyno wrote (an overlay's upper dir, its own /tmp)
    lower: Path | None = None  # for an overlay's upper dir, the folder it is laid over


@dataclass(frozen=True)
class DynoFilesystem:
    home: Path  # the app as the dyno sees it: $HOME and the working directory
    venv: Path | None  # the dependency environment as the dyno sees it
    scratch: Path  # the dyno's own directory, outside the app: all a wipe removes
    layers: tuple[Layer, ...]  # where its writes land
    tmpdir: Path | None  # TMPDIR, when /tmp is not private to the dyno


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def _orphan_guard() -> tuple[list[str], Callable[[], None] | None]:
    """How a dyno's first process is made to die with dynosim: util-linux's setpriv when there is
    one, since a preexec_fn makes Python fork its whole supervisor (3-20 ms a boot, more with
    threads running) instead of using vfork."""
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL"], None
    return [], _die_with_parent


def init_spec(spec: Mapping[str, object]) -> str:
    """The dyno's spec as dynoinit reads it (see there)."""
    return marshal.dumps(dict(spec)).hex()


class DynoProcess:
    """The running command of one dyno: every process in it, signalled as one."""

    def __init__(self, proc: asyncio.subprocess.Process, marker: str, namespaced: bool) -> None:
        self.proc = proc
        self.marker = marker
        self._namespaced = namespaced
        self._terminating = False
        self._killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        """Every live process of the dyno, including ones that left its process tree."""
        import psutil

        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.proc.pid)
            found[root.pid] = root
            found.update((p.pid, p) for p in root.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        if not self._namespaced:
            found.update((p.pid, p) for p in _marked(self.marker))
        return list(found.values())

    async def terminate(self) -> None:
        """SIGTERM to every process in the dyno."""
        self._terminating = True
        if not self._namespaced:
            for process in self.processes():
                _signal(process, signal.SIGTERM)
            return
        # The kernel drops a signal sent to a PID namespace's init before init has a handler
        # for it, so wait until dynoinit catches SIGTERM (it passes it to every process inside).
        for _ in range(500):
            init = self._init()
            if self.proc.returncode is not None:
                return
            if init is not None and _catches(init.pid, signal.SIGTERM):
                _signal(init, signal.SIGTERM)
                return
            await asyncio.sleep(0.01)

    def kill(self) -> None:
        import psutil

        self._killed = True
        if self._namespaced:
            _signal(psutil.Process(self.proc.pid) if self.proc.returncode is None else None, signal.SIGKILL)
            return
        for process in self.processes():
            _signal(process, signal.SIGKILL)

    async def wait(self) -> int:
        code = await self.proc.wait()
        if not self._namespaced:
            # during a shutdown the dyno lasts until its last process ends (or is killed)
            while self._terminating and not self._killed and _marked(self.marker):
                await asyncio.sleep(0.1)
            for process in _marked(self.marker):  # the dyno is over: so is all it started
                _signal(process, signal.SIGKILL)
        if self._killed:
            return 128 + signal.SIGKILL
        return 128 - code if code < 0 else code

    def _init(self) -> psutil.Process | None:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return None
        return children[0] if children else None


def _catches(pid: int, signum: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def _signal(process: psutil.Process | None, signum: int) -> None:
    import psutil

    if process is None:
        return
    try:
        process.send_signal(signum)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def _marked(prefix: str) -> list[psutil.Process]:
    """Processes whose environment carries a dyno marker starting with `prefix`."""
    import psutil

    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            value = process.environ().get(MARKER, "")
        except (psutil.Error, OSError):
            continue
        if value.startswith(prefix):
            found.append(process)
    return found


def reap_marked(prefix: str) -> list[int]:
    """Kill what a previous run (killed before it could clean up) left; return the pids."""
    import psutil

    processes = _marked(prefix)
    for process in processes:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=3)
    return [p.pid for p in processes]


class Sandbox:
    mode = "copy"

    def __init__(self, runtime_dir: Path, protect: Sequence[Path], reason: str) -> None:
        self.runtime_dir = runtime_dir
        self.protect = tuple(protect)
        self.reason = reason

    def fresh(self, dyno: str, slug: Slug) -> DynoFilesystem:
        scratch = self._scratch(dyno)
        home = scratch / "app"
        shutil.copytree(slug.path, home, symlinks=True)
        tmpdir = scratch / "tmp"
        tmpdir.mkdir(mode=0o700)
        return DynoFilesystem(home, slug.venv, scratch, (Layer(home, home, exact=False), Layer(tmpdir, tmpdir)), tmpdir)

    def _scratch(self, dyno: str) -> Path:
        scratch = self.runtime_dir / f"{dyno}-{secrets.token_hex(3)}"
        while True:
            self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                scratch.mkdir(mode=0o700)
            except FileNotFoundError:  # the folder was empty and a run or one-off that ended removed it
                continue
            (scratch / OWNER).write_text(_owner())
            return scratch

    async def spawn(
        self, fs: DynoFilesystem, script: str, env: Mapping[str, str], marker: str, *, attach: bool = False
    ) -> DynoProcess:
        """Start the dyno's command; `attach` gives it this terminal (a one-off dyno), else a pipe."""
        guard, preexec = _orphan_guard()
        kept = self.mode == "copy" and not attach  # dynoinit's keeper dies with dynosim, and takes the dyno along
        stdin, stdout, own_session = _stdio(attach)
        proc = await asyncio.create_subprocess_exec(
            *([] if kept else guard),
            *(_keeper_argv() if kept else self._argv(fs, script)),
            cwd=self._cwd(fs),
            env={**env, MARKER: marker, **(_keeper_env(script) if kept else self._extra_env(fs, script))},
            stdin=stdin,
            stdout=stdout,
            stderr=None if attach else subprocess.STDOUT,
            start_new_session=own_session,
            preexec_fn=None if kept else preexec,
        )
        return DynoProcess(proc, marker, namespaced=self.mode == "namespaces")

    def _cwd(self, fs: DynoFilesystem) -> Path:
        return fs.home

    def _argv(self, fs: DynoFilesystem, script: str) -> list[str]:
        return ["bash", "-c", script]

    def _extra_env(self, fs: DynoFilesystem, script: str) -> dict[str, str]:
        return {}

    def wipe(self, fs: DynoFilesystem) -> None:
        wipe_dir(fs.scratch, self.runtime_dir)


class NamespaceSandbox(Sandbox):
    mode = "namespaces"

    def __init__(self, runtime_dir: Path, protect: Sequence[Path], refused: Mapping[str, str]) -> None:
        """`refused`: the parts of a Heroku dyno (see _WITHOUT) the kernel refuses here, with its reason."""
        self.refused = dict(refused)
        unlike = [f"{_WITHOUT[part]} ({why})" for part, why in self.refused.items()] + [SHARED_NETWORK]
        reason = "user, mount, PID and UTS namespaces with overlayfs; unlike Heroku, " + "; ".join(unlike)
        super().__init__(runtime_dir, protect, reason)

    def fresh(self, dyno: str, slug: Slug) -> DynoFilesystem:
        hidden = {Path("/tmp"): "each dyno has a /tmp of its own"}
        if "root" not in self.refused:
            hidden[APP] = "each dyno has its slug there"
        for folder, why in hidden.items():
            if folder in slug.path.parents:
                raise DynosimError(
                    f"the slug cache {slug.path.parent.parent} is under {folder}, which no dyno sees ({why}); "
                    f"set DYNOSIM_CACHE_DIR to a folder outside {folder}"
                )
        scratch = self._scratch(dyno)
        home = slug.path if "root" in self.refused else APP
        layers = [Layer(scratch / "tmp", Path("/tmp"))]
        (scratch / "tmp").mkdir(mode=0o1777)
        os.chmod(scratch / "tmp", 0o1777)
        if "root" not in self.refused:
            (scratch / "root").mkdir()
        for name, lower, seen_as in (("app", slug.path, home), ("venv", slug.venv, slug.venv)):
            if lower is None or seen_as is None:
                continue
            for part in ("upper", "work"):
                (scratch / name / part).mkdir(parents=True)
            layers.append(Layer(scratch / name / "upper", seen_as, lower=lower))
        return DynoFilesystem(home, slug.venv, scratch, tuple(layers), None)

    def _spec(self, fs: DynoFilesystem) -> str:
        overlays = [
            {
                "lower": str(layer.lower),
                "upper": str(layer.host),
                "work": str(layer.host.with_name("work")),
                "target": str(layer.seen_as),
            }
            for layer in fs.layers
            if layer.lower is not None
        ]
        # the cached slugs and dependency environments (its own are overlaid): seen, never changed; only
        # its own when the dyno's folder is beside them (a read-only upper layer cannot be mounted)
        cached = {
            str(layer.lower if fs.scratch.is_relative_to(layer.lower.parent) else layer.lower.parent)
            for layer in fs.layers
            if layer.lower is not None
        }
        readonly = [str(p) for p in self.protect if p.is_dir()] + sorted(cached)
        spec: dict[str, object] = {
            "overlays": overlays,
            "readonly": readonly,
            "tmp": str(fs.scratch / "tmp"),
            "cwd": str(fs.home),
        }
        if "root" not in self.refused:
            spec["root"] = str(fs.scratch / "root")
        if "user" not in self.refused:
            spec["user"] = {"uid": dyno_uid(), "accounts": str(fs.scratch)}
        if "hostname" not in self.refused:
            spec["hostname"] = dyno_hostname()
        return init_spec(spec)

    def _cwd(self, fs: DynoFilesystem) -> Path:
        return fs.scratch  # unshare's; the dyno's own is set inside, where /app exists

    def _argv(self, fs: DynoFilesystem, script: str) -> list[str]:
        return _unshare_argv()

    def _extra_env(self, fs: DynoFilesystem, script: str) -> dict[str, str]:
        # the script as it is, beside the spec: hex would double it past what exec takes for one variable
        return {"DYNOSIM_DYNO_SPEC": self._spec(fs), "DYNOSIM_DYNO_SCRIPT": script}


def _keeper_argv() -> list[str]:
    return [sys.executable, "-I", "-S", str(INIT)]


def _keeper_env(script: str) -> dict[str, str]:
    """A copy-mode dyno's keeper (dynoinit's `keep`): its parent, this process, and the command."""
    return {"DYNOSIM_DYNO_SPEC": init_spec({"keep": os.getpid()}), "DYNOSIM_DYNO_SCRIPT": script}


def dyno_uid() -> int:
    """A dyno's user id, new at each boot as Heroku's are (seen: u42856, u49769)."""
    return random.randint(10000, 59999)


def dyno_hostname() -> str:
    """A version-4 UUID, as Heroku names each dyno's host (uuid's import costs 2 ms a run)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _stdio(attach: bool) -> tuple[int | None, int | None, bool]:
    """stdin, stdout (stderr joins it) and whether the dyno gets a session of its own."""
    if attach:  # the terminal's own session, so that job control and Ctrl-C reach the command
        return None, None, False
    # its own session: a Ctrl-C meant for dynosim must not reach the dynos, dynosim stops them itself
    return subprocess.DEVNULL, subprocess.PIPE, True


def _unshare_argv() -> list[str]:
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--uts",
        "--fork",
        "--kill-child",
        "--mount-proc",
        sys.executable,
        "-I",
        "-S",
        str(INIT),
    ]


def wipe_dir(path: Path, root: Path) -> None:
    """Remove a dyno's directory: never follows a symlink, never leaves `root`, never crosses a mount."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root))
    if root not in path.parents or path.is_symlink() or not path.is_dir() or remove_if_empty(path):
        return
    _detach_mounts(path)
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:  # removed meanwhile: nothing to wipe
        return
    _empty_tree(top)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_MNT_DETACH = 2
_UMOUNT_NOFOLLOW = 8


def _detach_mounts(path: Path) -> None:
    """Detach what is mounted inside `path`, deepest first, so the wipe removes the mount points and
    never what is mounted on them: a copy-mode dyno runs as whoever runs dynosim, and as root it can
    bind an outside folder into its own (issue 22's wipe trial: its wipe raised, which ended the
    restart). Detaching takes the privilege that mounted it; without it, the wipe is refused."""
    import psutil

    inside = [
        Path(mount.mountpoint)
        for mount in psutil.disk_partitions(all=True)
        if Path(mount.mountpoint) == path or path in Path(mount.mountpoint).parents
    ]
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(inside, key=lambda p: len(p.parts), reverse=True):
        if libc.umount2(os.fsencode(point), _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
            why = os.strerror(ctypes.get_errno()).lower()
            raise RuntimeError(f"refusing to wipe {path}: {point} is mounted inside it and cannot be detached ({why})")


def _empty_tree(top: int) -> None:
    """Remove all under the folder open as `top` (and close it), one level at a time through file
    descriptors: a dyno's 10,000-deep tree is no recursion (shutil.rmtree's was a RecursionError that
    left the folder) and no path past PATH_MAX. Only the current folder is open; going back up is its
    `..`, checked to be the folder it came from (device and inode). A symlink is removed, never
    followed; a folder of another filesystem is left; a folder or file gone meanwhile (a run killed
    mid-wipe, a dyno's exit) is no error; a folder without write or search permission for us (overlayfs
    leaves its work dir 000, a dyno may chmod 0500) is opened up first."""
    device = os.fstat(top).st_dev
    above: list[tuple[str, int]] = []  # from the top down: each open folder's name in its parent, its inode
    fd = top
    try:
        while True:
            inner = _first_folder(fd, device)
            if inner is not None:
                name, child = inner
                above.append((name, os.fstat(fd).st_ino))
                os.close(fd)
                fd = child
                continue
            if not above:
                return
            name, inode = above.pop()
            parent = os.open("..", _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (device, inode):
                raise RuntimeError(f"a folder being wiped moved meanwhile (at {name}); wipe stopped")
            _remove(os.rmdir, name, fd)
    finally:
        os.close(fd)


def _first_folder(fd: int, device: int) -> tuple[str, int] | None:
    """Unlink every entry of the folder open as `fd` but its folders; the first folder of the same
    filesystem, opened, with its name; None once there is none."""
    with os.scandir(fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in names:
        if not is_dir:
            _remove(os.unlink, name, fd)
            continue
        try:
            child = os.open(name, _DIRECTORY, dir_fd=fd)
        except FileNotFoundError:
            continue
        except PermissionError:
            os.chmod(name, stat.S_IRWXU, dir_fd=fd)
            child = os.open(name, _DIRECTORY, dir_fd=fd)
        if os.fstat(child).st_dev != device:  # never into another filesystem
            os.close(child)
            continue
        os.fchmod(child, stat.S_IRWXU)  # its entries can go: a 0500 folder's too
        return name, child
    return None


def _remove(remove: Callable[..., None], name: str, fd: int) -> None:
    try:
        remove(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        os.fchmod(fd, stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            remove(name, dir_fd=fd)


def remove_if_empty(path: Path) -> bool:
    """Remove `path` if it is an empty folder (what a run's folder is once each dyno wiped its own;
    nothing can be mounted in it); False if it is not there to remove or holds something."""
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def choose_sandbox(requested: str, runtime_dir: Path, protect: Sequence[Path]) -> Sandbox:
    """Namespaces where the kernel allows them (checked by mounting a real overlay), else copy."""
    if requested == "copy":
        return Sandbox(runtime_dir, protect, f"asked for with --sandbox copy; {_copy_differences()}")
    reason, refused = _namespaces_unavailable(runtime_dir)
    if reason is None:
        return NamespaceSandbox(runtime_dir, protect, refused)
    if requested == "namespaces":
        raise DynosimError(f"--sandbox namespaces: not available here: {reason}; use --sandbox copy")
    return Sandbox(runtime_dir, protect, f"namespaces unavailable: {reason}; {_copy_differences()}")


def _copy_differences() -> str:
    who = "root" if os.geteuid() == 0 else "you"
    return (
        f"unlike Heroku, dynos run as {who}, in a copy of the slug rather than at /app, with this machine's host "
        f"name; {SHARED_NETWORK}"
    )


def _namespaces_unavailable(runtime_dir: Path) -> tuple[str | None, dict[str, str]]:
    """Why there can be no namespaces sandbox (None if there can), and the parts of a Heroku dyno
    the kernel refuses in one."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Linux namespaces", {}
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed", {}
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a probe that passed once holds until the machine reboots or Python changes: skip it then
    passed = runtime_dir.parent / "namespaces-probed"
    fingerprint = f"{_boot_id()} {sys.executable}"
    try:
        first, *refusals = passed.read_text().split("\n")
        if first == fingerprint:
            return None, dict(line.split("\t", 1) for line in refusals if "\t" in line)
    except OSError:
        pass
    reason, refused = _probe(runtime_dir)
    if reason is None:
        try:
            passed.write_text("\n".join([fingerprint, *(f"{part}\t{why}" for part, why in refused.items())]))
        except OSError:
            pass
    return reason, refused


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_identity(pid: int) -> str | None:
    """What tells process `pid` from any later one given the same pid: the boot and its start time, read
    from /proc (psutil, which knows it everywhere, costs `dynosim run` 7 ms to import); None if no
    such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        if os.path.isdir("/proc"):
            return None
        import psutil

        try:
            return f"{psutil.Process(pid).create_time():.2f}"
        except psutil.Error:
            return None
    # field 22, starttime; the name before it (field 2) may hold spaces and parentheses
    return f"{_boot_id()}:{stat.rsplit(b')', 1)[1].split()[19].decode()}"


def still_running(pid: int, identity: object) -> bool:
    """Whether the process recorded as (pid, its process_identity) is the one running now."""
    return identity is not None and process_identity(pid) == identity


@functools.cache
def _owner() -> str:
    """This process, as a dyno folder's OWNER file names it."""
    return f"{os.getpid()} {process_identity(os.getpid())}"


def sweep_left_behind(root: Path) -> None:
    """Wipe the dyno folders under `root` (every app's run folder) whose run is gone: a run killed with
    SIGKILL cannot wipe its own, and an app not run again would keep them. A folder without an OWNER
    file (being made, or made by an older dynosim) is left alone."""
    for run_dir in _folders(root):
        for scratch in _folders(run_dir):
            try:
                pid, identity = (scratch / OWNER).read_text().split(" ", 1)
                alive = still_running(int(pid), identity)
            except (OSError, ValueError):
                continue
            if not alive:
                try:
                    wipe_dir(scratch, run_dir)
                except (OSError, RuntimeError):  # something mounted in it, or not ours to remove: left
                    pass
        remove_if_empty(run_dir)


def _folders(path: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _probe(runtime_dir: Path) -> tuple[str | None, dict[str, str]]:
    """dynoinit's probe: the base in full, then each part of a Heroku dyno on its own (see there)."""
    probe = runtime_dir / f"probe-{secrets.token_hex(3)}"
    try:
        for part in ("lower", "upper", "work", "root"):
            (probe / part).mkdir(parents=True)
        lower = str(probe / "lower")
        spec = {
            "overlays": [{"lower": lower, "upper": str(probe / "upper"), "work": str(probe / "work"), "target": lower}],
            "tmp": lower,
            "cwd": "/",
            "script": "",
            "probe": True,
            "root": str(probe / "root"),
            "user": {"uid": dyno_uid(), "accounts": str(probe)},
            "hostname": dyno_hostname(),
        }
        result = subprocess.run(
            _unshare_argv(),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DYNOSIM_DYNO_SPEC": init_spec(spec)},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if result.returncode != 0:
            return (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1], {}
        return None, dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc), {}
    finally:
        wipe_dir(probe, runtime_dir)
