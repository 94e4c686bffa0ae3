"""PID 1 of a dyno in namespaces mode, and the keeper of one in copy mode (see `keep`).

Run by `unshare --user --map-root-user --mount --pid --uts --fork` as a plain script (python -I -S,
stdlib only), so the app's PYTHONPATH and site never touch it. It builds the dyno's fresh
filesystem, names the dyno, starts the dyno's command under bash as the dyno's user, and stays
as init: a SIGTERM is passed to every process in the dyno (as Heroku does), and it exits only
once all of them are gone, or at once when the command ends on its own, which makes the kernel
kill whatever is left.

The filesystem, where the kernel allows it (the spec's `root`), is Heroku's layout: a root of
its own, read-only, made of this machine's top-level folders, with the slug (an overlay, so
writes land in a folder of the dyno's) at /app and a private /tmp; the dependency environment
stays at its own path, where its scripts' shebangs point. Without it, the overlay is mounted
over the slug's own path. The app folder is read-only either way. The command runs as a
non-root user in a user namespace of its own (Heroku's dynos are never root), with a host name
of its own (Heroku's is a UUID).

The spec comes in the DYNOSIM_DYNO_SPEC environment variable, never on the command line, as
hex of `marshal` (built in and made by the same interpreter: json's import cost 7 ms a boot); the
command's script in DYNOSIM_DYNO_SCRIPT as it is, so a command up to what exec takes fits.
With `probe` set, it only tries each part and prints the parts the kernel refused, one
"part<TAB>reason" line each.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import sys
import time

TYPE_CHECKING = False  # typing's import would cost every boot a few milliseconds
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import Any

    Spec = dict[str, Any]  # what DYNOSIM_DYNO_SPEC holds (see runtime/sandbox.py)
else:  # the same functions and numbers, without signal's enums: enum's import cost every boot 2-4 ms
    import _signal as signal

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        target,
    )


def build_filesystem(spec: Spec) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in spec.get("readonly", []):
        mount(path, path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    root = spec.get("root")
    if root:
        make_root(root)
    inside = root or ""
    for layer in spec["overlays"]:
        options = "lowerdir={lower},upperdir={upper},workdir={work},userxattr".format(**layer)
        mount("overlay", inside + layer["target"], "overlay", 0, options)
    user = spec.get("user")
    if user:
        write_accounts(user, inside)
    # a directory outside rather than a tmpfs, so the ephemeral ledger sees what lands in /tmp
    # (bound last: it may hide the dyno's folder, when that is under the machine's /tmp)
    mount(spec["tmp"], inside + "/tmp", None, MS_BIND)
    if root:
        enter(root)


def make_root(root: str) -> None:
    """A root of the dyno's own in `root`: this machine's top-level folders (each with what is
    mounted in it), its symlinks (/bin -> usr/bin), and empty /app and /tmp to mount on."""
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for entry in os.scandir("/"):
        target = root + "/" + entry.name
        if entry.name in ("app", "tmp"):  # the dyno's own (a machine's /app is hidden, as a container's would be)
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            os.mkdir(target)
            # recursive: a user namespace may not bind a folder without the mounts inside it
            mount(entry.path, target, None, MS_BIND | MS_REC)
    os.mkdir(root + "/app")
    os.mkdir(root + "/tmp")


def enter(root: str) -> None:
    """Make `root` the dyno's /, read-only. The root moved over / and a chroot to it (what
    switch_root does) needs no per-architecture pivot_root number, and the kernel does not count
    it as a chroot, so the app may still make namespaces of its own (browsers' sandboxes do)."""
    os.chdir(root)
    mount(root, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    # the folder holding `root` was bound in before the root was complete: its copy of the root is no use
    if os.path.ismount(root):
        _check(_libc.umount2(root.encode(), MNT_DETACH), root)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def write_accounts(user: dict[str, Any], inside: str) -> None:
    """/etc/passwd and /etc/group naming the dyno's user as Heroku's do (u<uid>, group dyno,
    home /app), written beside the dyno's folders and bound over the machine's."""
    uid = user["uid"]
    lines = {
        "passwd": [f"u{uid}:x:{uid}:{uid}::/app:/bin/bash", f"dyno:x:{uid}:{uid}::/app:/bin/bash"],
        "group": [f"dyno:x:{uid}:"],
    }
    for name, ours in lines.items():
        seen = inside + "/etc/" + name
        try:
            with open("/etc/" + name) as handle:
                theirs = [line.rstrip("\n") for line in handle]
        except OSError:
            theirs = []
        # the machine's entries with the dyno's id or name would be found first
        kept = [line for line in theirs if line.split(":")[2:3] != [str(uid)] and not line.startswith("dyno:")]
        if not theirs:  # nothing to bind over (and no file to make in the machine's /etc)
            continue
        written = os.path.join(user["accounts"], name)
        with open(written, "w") as handle:
            handle.write("\n".join(kept + ours) + "\n")
        mount(written, seen, None, MS_BIND)


def set_hostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, len(data)), "sethostname")


def become(uid: int) -> None:
    """Enter a user namespace of the dyno's own as `uid`, mapped to the user dynosim runs as: the
    app is not root there, and exec leaves it no capability in the dyno's mount namespace."""
    _check(_libc.unshare(CLONE_NEWUSER), "unshare")
    for name, text in (("uid_map", f"{uid} 0 1"), ("setgroups", "deny"), ("gid_map", f"{uid} 0 1")):
        with open("/proc/self/" + name, "w") as handle:
            handle.write(text)


class Stop(Exception):
    """The dyno is being stopped: leave the blocking wait."""


def terminate_all(signaled: dict[int, bytes]) -> None:
    """SIGTERM to every process of the dyno that has not had it yet in its current form: one that
    appeared since, or that exec'd since (a signal sent while bash was exec'ing can be lost)."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1":
            continue
        pid = int(name)
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                form = handle.read()
        except OSError:
            continue
        if signaled.get(pid) != form:
            signaled[pid] = form
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def run(spec: Spec) -> int:
    def on_term(signum: int, frame: object) -> None:
        raise Stop

    child = os.fork()
    if child == 0:
        for ignored_by_python in (signal.SIGPIPE, signal.SIGXFSZ):  # the app gets the defaults
            signal.signal(ignored_by_python, signal.SIG_DFL)
        if spec.get("user"):
            try:
                become(spec["user"]["uid"])
            except OSError as exc:
                sys.stderr.write(f"dynosim: cannot run as the dyno's user: {exc}\n")
                os._exit(70)
        os.chdir(spec["cwd"])
        os.execvp("bash", ["bash", "-c", spec["script"]])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    status = None
    try:
        while status is None:  # the command ending on its own ends the dyno: the kernel kills the rest
            pid, wait_status = os.waitpid(-1, 0)
            if pid == child:
                status = exit_code(wait_status)
        return status
    except Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # a shutdown: the dyno lasts until its last process is gone (or dynosim sends SIGKILL)
    signaled: dict[int, bytes] = {}
    terminate_all(signaled)
    ticks = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0 if status is None else status
        if pid == child:
            status = exit_code(wait_status)
        if pid == 0:
            time.sleep(0.02)
            ticks += 1
            if ticks % 10 == 0:
                terminate_all(signaled)


def in_child(attempt: Callable[[], object]) -> None:
    """`attempt()` in a child with a mount namespace of its own (what it mounts is gone with it);
    its OSError, if any, comes back on a pipe."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            _check(_libc.unshare(CLONE_NEWNS), "unshare")
            attempt()
        except OSError as exc:
            os.write(write, str(exc).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as failure:
        text = failure.read()
    if text:
        raise OSError(text)


def probe(spec: Spec) -> int:
    """The base (overlay, private /tmp) must work; each part of a Heroku dyno is tried on its own,
    before the base hides the machine's /tmp (where the probe's folder may be)."""
    parts = {"root": spec.pop("root"), "user": spec.pop("user"), "hostname": spec.pop("hostname")}
    at_app = dict(spec, root=parts["root"], overlays=[dict(layer, target="/app") for layer in spec["overlays"]])
    refused = []

    def own_user() -> None:
        write_accounts(parts["user"], "")
        become(parts["user"]["uid"])

    for part, attempt in (
        ("root", lambda: in_child(lambda: build_filesystem(at_app))),
        ("user", lambda: in_child(own_user)),
        ("hostname", lambda: set_hostname(parts["hostname"])),
    ):
        try:
            attempt()
        except OSError as exc:
            refused.append(f"{part}\t{exc}\n")
    try:
        build_filesystem(spec)
    except OSError as exc:
        sys.stderr.write(f"dynosim: cannot build the dyno filesystem: {exc}\n")
        return 70
    sys.stdout.write("".join(refused))
    return 0


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


class Orphaned(Exception):
    """dynosim died (the parent-death signal): end the dyno."""


def keep(spec: Spec) -> int:
    """Copy mode's keeper of a dyno: its command's parent, and the subreaper every process the command
    leaves is reparented to, so that when dynosim dies without stopping the dyno (a SIGKILL) the whole
    dyno goes with it, a daemon that double-forked out of its tree included (issue 22's kill trial found
    one left running until the app's next start). Otherwise it only waits: dynosim signals the dyno's
    processes itself, a SIGTERM meant for them is no concern of the keeper's, and it ends with the
    command's status once the command ends (dynosim ends whatever the command left)."""

    def orphaned(signum: int, frame: object) -> None:
        raise Orphaned

    signal.signal(signal.SIGUSR1, orphaned)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    try:
        if os.getppid() != spec["keep"]:  # dynosim died before the signal was asked for
            raise Orphaned
        child = os.fork()
        if child == 0:
            for inherited in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(inherited, signal.SIG_DFL)
            os.execvp("bash", ["bash", "-c", spec["script"]])
        while True:
            pid, wait_status = os.waitpid(-1, 0)
            if pid == child:
                return exit_code(wait_status)
    except Orphaned:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        kill_descendants()
        return 128 + signal.SIGKILL


def kill_descendants() -> None:
    """SIGKILL to every process under this one, until none is left (one may fork meanwhile)."""
    me = os.getpid()
    while True:
        parents: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name, "rb") as handle:
                        parents[int(name)] = int(handle.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        under = {me}
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in under and pid not in under}
            under |= more
            grew = bool(more)
        under.discard(me)
        if not under:
            return
        for pid in under:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # the reparented ones are this one's to reap
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)


def main() -> int:
    spec = marshal.loads(bytes.fromhex(os.environ.pop("DYNOSIM_DYNO_SPEC")))
    spec["script"] = os.environ.pop("DYNOSIM_DYNO_SCRIPT", spec.get("script", ""))
    if spec.get("probe"):
        return probe(spec)
    if spec.get("keep"):
        return keep(spec)
    try:
        build_filesystem(spec)
        if spec.get("hostname"):
            set_hostname(spec["hostname"])
    except OSError as exc:
        sys.stderr.write(f"dynosim: cannot build the dyno filesystem: {exc}\n")
        return 70
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
