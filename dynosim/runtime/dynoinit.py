"""PID 1 of a dyno in namespaces mode.

Run by `unshare --user --map-root-user --mount --pid --fork` as a plain script (python -I -S,
stdlib only), so the app's PYTHONPATH and site never touch it. It mounts the dyno's fresh
filesystem (an overlay of the slug over the slug's own path, a private /tmp that is a
directory of its own outside, the app folder read-only), starts the dyno's command under bash, and stays as init: a SIGTERM is passed to
every process in the dyno (as Heroku does), and it exits only once all of them are gone, or
at once when the command ends on its own, which makes the kernel kill whatever is left.
The spec comes in the DYNOSIM_DYNO_SPEC environment variable, never on the command line, as
hex of `marshal` (built in and made by the same interpreter: json's import cost 7 ms a boot).
"""
import ctypes
import marshal
import os
import signal
import sys
import time

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype, flags, data=None):
    if _libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    ) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def build_filesystem(spec):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in spec.get("readonly", []):
        mount(path, path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for layer in spec["overlays"]:
        options = "lowerdir={lower},upperdir={upper},workdir={work},userxattr".format(**layer)
        mount("overlay", layer["lower"], "overlay", 0, options)
    # a directory outside rather than a tmpfs, so the ephemeral ledger sees what lands in /tmp
    mount(spec["tmp"], "/tmp", None, MS_BIND)


class Stop(Exception):
    """The dyno is being stopped: leave the blocking wait."""


def terminate_all(signaled):
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


def exit_code(wait_status):
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def run(spec):
    def on_term(signum, frame):
        raise Stop

    child = os.fork()
    if child == 0:
        for ignored_by_python in (signal.SIGPIPE, signal.SIGXFSZ):  # the app gets the defaults
            signal.signal(ignored_by_python, signal.SIG_DFL)
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
    signaled = {}
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


def main():
    spec = marshal.loads(bytes.fromhex(os.environ.pop("DYNOSIM_DYNO_SPEC")))
    try:
        build_filesystem(spec)
    except OSError as exc:
        sys.stderr.write("dynosim: cannot build the dyno filesystem: {}\n".format(exc))
        return 70
    if spec.get("probe"):
        return 0
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
