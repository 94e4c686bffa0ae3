"""PID 1 of a dyno in namespaces mode.

Run by `unshare --user --map-root-user --mount --pid --fork` as a plain script (python -I -S,
stdlib only), so the app's PYTHONPATH and site never touch it. It mounts the dyno's fresh
filesystem (an overlay of the slug over the slug's own path, a private /tmp that is a
directory of its own outside, the app folder read-only), starts the dyno's command under bash, and stays as init: a SIGTERM is passed to
every process in the dyno (as Heroku does), and it exits only once all of them are gone, or
at once when the command ends on its own, which makes the kernel kill whatever is left.
The spec comes in the DYNOSIM_DYNO_SPEC environment variable, never on the command line.
"""
import ctypes
import json
import os
import signal
import sys

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


def run(spec):
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True
        try:
            os.kill(-1, signal.SIGTERM)  # from PID 1: every other process in the dyno
        except ProcessLookupError:
            pass

    child = os.fork()
    if child == 0:
        os.chdir(spec["cwd"])
        os.execvp("bash", ["bash", "-c", spec["script"]])
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            status = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                break
    return 128 - status if status < 0 else status


def main():
    spec = json.loads(os.environ.pop("DYNOSIM_DYNO_SPEC"))
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
