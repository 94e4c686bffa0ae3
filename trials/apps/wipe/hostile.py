"""The wipe trial's web dyno: fills its own filesystem with what a wipe could trip on, says what it made
(one `hostile:` line), then answers 200 on $PORT.

In $HOME and in the dyno's /tmp: symlinks to folders and files outside the dyno (WIPE_OUTSIDE, which
the dyno sees, and WIPE_HOST_TMP, the machine's /tmp, which a namespaced dyno does not: the link
resolves only where the wipe runs), a relative one climbing out, a loop; hard links to outside files;
a bind mount of an outside folder (where the sandbox lets the dyno mount); names with a newline,
invalid UTF-8, a leading dash and 255 bytes; read-only folders with files inside (0500, and 0000); a
10,000-deep tree, made one level at a time relative to the last, never a path past PATH_MAX.
"""

import errno
import os
import signal
import stat
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEPTH = 10_000
OUTSIDE = os.environ["WIPE_OUTSIDE"]
HOST_TMP = os.environ["WIPE_HOST_TMP"]
made = {}


def attempt(kind, action):
    try:
        action()
    except OSError as error:
        if made.get(kind) != "ok":
            made[kind] = "n/a (%s)" % (errno.errorcode.get(error.errno, error.errno) if error.errno else error)
        return
    made[kind] = "ok"


def deep(base):
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir("deep", dir_fd=fd)
    for level in range(DEPTH):
        inner = os.open("deep" if level == 0 else "d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
        if level < DEPTH - 1:
            os.mkdir("d", dir_fd=fd)
    with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as handle:
        handle.write("ten thousand folders down\n")
    os.symlink(OUTSIDE, "out", dir_fd=fd)  # and a way out at the bottom


def bind(target):
    os.mkdir(target)
    done = subprocess.run(["mount", "--bind", OUTSIDE, target], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(errno.EPERM, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "refused")


def read_only(base):
    folder = os.path.join(base, "readonly")
    os.mkdir(folder)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write(name)
    os.symlink(OUTSIDE, os.path.join(folder, "out"))
    os.mkdir(os.path.join(folder, "inner"))
    with open(os.path.join(folder, "inner", "c.txt"), "w") as handle:
        handle.write("c")
    os.chmod(os.path.join(folder, "inner"), 0)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)


def odd_names(base):
    folder = os.fsencode(os.path.join(base, "odd"))
    os.mkdir(folder)
    for name in (
        b"new\nline",
        b"\xff\xfe not utf-8 \x80",
        b"-rf",
        b" leading space",
        b"*",
        b"x" * 255,
        b"\x01\x1b[31m",
    ):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(name)
        if len(name) <= 253:
            os.mkdir(os.path.join(folder, name + b".d"))


def fill(base):
    attempt("symlinks", lambda: os.symlink(OUTSIDE, os.path.join(base, "out-dir")))
    attempt("symlinks", lambda: os.symlink(os.path.join(OUTSIDE, "keep.txt"), os.path.join(base, "out-file")))
    attempt("symlinks", lambda: os.symlink(HOST_TMP, os.path.join(base, "out-host-tmp")))
    attempt("symlinks", lambda: os.symlink("../" * 40 + OUTSIDE.lstrip("/"), os.path.join(base, "out-relative")))
    attempt("symlinks", lambda: os.symlink("loop", os.path.join(base, "loop")))
    attempt("symlinks", lambda: os.symlink("/", os.path.join(base, "out-root")))
    attempt("hard links", lambda: os.link(os.path.join(OUTSIDE, "keep.txt"), os.path.join(base, "hard-link")))
    attempt("hard links", lambda: os.link(os.path.join(OUTSIDE, "inner", "deeper.txt"), os.path.join(base, "hard-2")))
    attempt("bind mounts", lambda: bind(os.path.join(base, "bound")))
    attempt("odd names", lambda: odd_names(base))
    attempt("read-only folders", lambda: read_only(base))
    attempt("deep tree", lambda: deep(base))


for place in (os.environ["HOME"], os.environ.get("TMPDIR", "/tmp")):
    fill(place)
print("hostile: " + ", ".join("%s %s" % item for item in sorted(made.items())), flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, fmt, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
