"""The data-loss trial (issue 22): a writer dyno commits rows to Postgres and keys to Redis while dynosim,
the add-ons' servers and the dyno are killed and cycled; a count of acknowledged writes missing after.

A fresh app (a `worker` whose writer.py inserts one row and sets one key at a time, each through its own
connection kept open and made again when lost, and prints `ACK pg ID` or `ACK redis ID` once Postgres
committed it or Redis answered OK) runs with native heroku-postgresql and heroku-redis at their default
plans. The acknowledgements are recorded outside the emulation, by this trial, off dynosim's output: a
line lost with a killed dynosim only leaves a write uncounted, never a write counted that was not made.

`count` events, of four kinds in a seeded order (each kind once in any four), each after a seeded stretch
of writing: SIGKILL of dynosim itself (its dynos and servers die with it, as a crashed laptop's would not:
the servers' parent-death signals stop them cleanly) and a new `dynosim run`; SIGKILL of the Postgres
postmaster or of redis-server (its pid from `dynosim addons --json`), which the run's recovery
(dynosim/addons/recovery.py) starts again, on the same port, from its WAL or append-only file; a
`dynosim ps:restart worker` (a cycle). After the last event every acknowledged id is looked up through
the add-ons' own URLs, with the official clients.

The figure says what the settings promise, read off the servers: Postgres runs with fsync,
synchronous_commit and full_page_writes on, so a commit is on disk before it is acknowledged (goal: 0
lost). Redis runs `appendonly yes` with `appendfsync everysec`: a write is in the kernel's page cache
before its reply, so a process SIGKILL loses nothing (goal: 0 lost); only a host crash can lose up to a
second of writes (two, while a slow disk makes Redis postpone its write behind a stalled fsync), which this
trial does not do.

Run alone: `python -m trials.data_loss --count 4 --seed 22`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: this folder first on sys.path would shadow the stdlib's http
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from trials.base import Failure, Result, free_port, replay_command, start_run

# not under /tmp: a dyno gets a private /tmp, so the app and the slug cache live elsewhere
WORK = Path(os.environ.get("DYNOSIM_TRIALS_WORK", "/var/tmp/dynosim-trials-data-loss"))
CACHE = Path(os.environ.get("DYNOSIM_TRIALS_CACHE", "/var/tmp/dynosim-trials-cache"))
CA = Path(os.environ.get("DYNOSIM_TRIALS_CA", "/var/tmp/dynosim-trials-ca"))  # not the user's own CA
KINDS = ("kill-dynosim", "kill-postgres", "kill-redis", "cycle")
# the dyno manager's and recovery's back-off, shrunk as `--crash-backoff-scale` does: a server killed again
# within the boot window waits 0.12 s, then 0.24, 0.48…, not 10 min
BACKOFF_SCALE = "0.0002"
UP = r"heroku\[worker\.1\]: State changed from starting to up"
START_TIMEOUT = 240.0  # a first build installs psycopg and redis into the slug
RECOVER_TIMEOUT = 120.0
WRITING = (0.4, 1.6)  # seconds of writing before each event, drawn from the seed

PROCFILE = "worker: python writer.py\n"
REQUIREMENTS = "psycopg[binary]>=3.1\nredis>=5\n"
WRITER = '''\
"""Writes one row, then one key, again and again; says each once it is acknowledged."""
import os
import secrets
import signal
import sys
import time

import psycopg
import redis

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
boot = secrets.token_hex(4)
db = None
kv = None


def database():
    global db
    if db is None:
        db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5)
        db.execute("CREATE TABLE IF NOT EXISTS acked (id text PRIMARY KEY)")
    return db


def cache():
    global kv
    if kv is None:
        kv = redis.Redis.from_url(os.environ["REDIS_URL"], ssl_cert_reqs=None, socket_timeout=5)
    return kv


n = 0
while True:
    n += 1
    key = f"{boot}-{n}"
    try:
        database().execute("INSERT INTO acked (id) VALUES (%s)", (key,))
        print(f"ACK pg {key}", flush=True)
    except psycopg.Error:
        db = None
        time.sleep(0.05)
    try:
        if cache().set(f"acked:{key}", "1"):
            print(f"ACK redis {key}", flush=True)
    except redis.RedisError:
        kv = None
        time.sleep(0.05)
    time.sleep(0.002)
'''
ACK = re.compile(r"app\[worker\.\d+\]: ACK (pg|redis) (\S+)$")


class Run:
    """A `dynosim run` of the app in its own session; every acknowledgement it prints is kept."""

    def __init__(self, app: Path, env: dict[str, str], acks: dict[str, set[str]]) -> None:
        self.lines: list[str] = []
        self.acks = acks
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen = 0
        args = ["--no-dashboard", "--addons", "native", "--crash-backoff-scale", BACKOFF_SCALE]
        self.proc = start_run(app, free_port(), args, env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            found = ACK.search(line)
            if found is not None:
                self.acks[found[1]].add(found[2])  # the set's add: one bytecode, safe beside the trial's reads
            else:
                self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> None:
        """Until a line after the last one matched matches `pattern`; RuntimeError after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                self._seen += 1
                if regex.search(self.lines[self._seen - 1]):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no line matching {pattern!r} in {timeout:.0f} s; last: {self.lines[-3:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"dynosim exited ({self.proc.wait()}) before {pattern!r}: {self.lines[-5:]}")
            self.lines.append(line)

    def kill(self) -> None:
        """SIGKILL to dynosim alone, as a crash would; its dynos and servers go by their parent-death signals."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(10)


def make_app(folder: Path) -> Path:
    """The writer app, fresh, in `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, text in {"Procfile": PROCFILE, "requirements.txt": REQUIREMENTS, "writer.py": WRITER}.items():
        (folder / name).write_text(text)
    return folder


def dynosim(app: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dynosim", *args, "-C", str(app)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dynosim {' '.join(args)} failed: {done.stderr.strip()[-200:]}")
    return done.stdout


def server_of(app: Path, env: dict[str, str], addon: str) -> tuple[str, int]:
    """The add-on's name and its server's pid, as `dynosim addons --json` shows them."""
    for row in json.loads(dynosim(app, env, "addons", "--json")):
        server = row.get("server") or {}
        if row["addon"] == addon and server.get("state") == "up" and server.get("pid"):
            return str(row["name"]), int(server["pid"])
    raise RuntimeError(f"dynosim addons shows no {addon} server up")


def settings(config: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The durability settings the servers run with, as they report them."""
    import psycopg
    import redis

    with psycopg.connect(config["DATABASE_URL"], connect_timeout=10) as db:
        pg = {name: str(db.execute(f"SHOW {name}").fetchone()[0]) for name in PG_SETTINGS}  # type: ignore[index]
    client = redis.Redis.from_url(config["REDIS_URL"], ssl_cert_reqs=None, socket_timeout=10)
    try:
        kv = {name: str(client.config_get(name)[name]) for name in ("appendonly", "appendfsync")}
    finally:
        client.close()
    return pg, kv


PG_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


def missing(config: dict[str, str], acks: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """The acknowledged ids the add-ons do not have: rows, then keys."""
    import psycopg
    import redis

    rows, keys = sorted(acks["pg"]), sorted(acks["redis"])
    with psycopg.connect(config["DATABASE_URL"], connect_timeout=10) as db:
        present = {str(found) for (found,) in db.execute("SELECT id FROM acked")}
    client = redis.Redis.from_url(config["REDIS_URL"], ssl_cert_reqs=None, socket_timeout=30)
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(f"acked:{key}")
        there = pipe.execute()
    finally:
        client.close()
    return [r for r in rows if r not in present], [k for k, on in zip(keys, there, strict=True) if not on]


def events(seed: int, count: int) -> list[tuple[str, float]]:
    """Each event's kind and the writing before it: every kind once in each four, in the seed's order."""
    rng = random.Random(seed)
    kinds: list[str] = []
    while len(kinds) < count:
        four = list(KINDS)
        rng.shuffle(four)
        kinds += four
    return [(kind, rng.uniform(*WRITING)) for kind in kinds[:count]]


def run(count: int, seed: int) -> Result:
    replay = replay_command("data-loss", seed, count)
    app = make_app(WORK / f"app-{seed}")
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE), "DYNOSIM_CA_DIR": str(CA), "NO_COLOR": "1"}
    env.pop("PORT", None)
    dynosim(app, env, "addons:create", "heroku-postgresql")
    dynosim(app, env, "addons:create", "heroku-redis")
    acks: dict[str, set[str]] = {"pg": set(), "redis": set()}
    failures: list[Failure] = []
    done: dict[str, int] = dict.fromkeys(KINDS, 0)
    current = Run(app, env, acks)
    try:
        current.wait_for(UP, START_TIMEOUT)
        for kind, writing in events(seed, count):
            time.sleep(writing)
            try:
                current = strike(kind, app, env, current, acks)
                done[kind] += 1
            except RuntimeError as error:
                failures.append(Failure(f"{kind} (event {sum(done.values()) + 1}): {error}", replay))
                current.stop()
                current = Run(app, env, acks)
                current.wait_for(UP, START_TIMEOUT)
        time.sleep(WRITING[0])
        config = json.loads(dynosim(app, env, "config", "--json"))
        pg, kv = settings(config)
        wanted = {"pg": set(acks["pg"]), "redis": set(acks["redis"])}  # what was acknowledged up to now
        lost_rows, lost_keys = missing(config, wanted)
    finally:
        current.stop()
    for what, lost, total in (("rows", lost_rows, wanted["pg"]), ("keys", lost_keys, wanted["redis"])):
        if lost:
            failures.append(
                Failure(f"{len(lost)} of {len(total)} acknowledged {what} missing, e.g. {', '.join(lost[:3])}", replay)
            )
    if not all(value == "on" for value in pg.values()):
        failures.append(Failure(f"Postgres runs with {pg}: a commit may be acknowledged before it is on disk", replay))
    shutil.rmtree(app, ignore_errors=True)
    kills = ", ".join(f"{n} {kind}" for kind, n in done.items() if n)
    promise = (
        f"Postgres {', '.join(f'{k}={v}' for k, v in pg.items())}; Redis appendonly={kv['appendonly']}, "
        f"appendfsync={kv['appendfsync']}: nothing acknowledged lost to a process SIGKILL, up to ~1 s to a host "
        "crash (not tried)"
    )
    return Result(
        runs=count,
        failures=tuple(failures),
        figure=(
            f"{len(lost_rows)} of {len(wanted['pg']):,} acknowledged rows and {len(lost_keys)} of "
            f"{len(wanted['redis']):,} keys lost across {kills}; {promise}"
        ),
        goal="0 lost",
    )


def strike(kind: str, app: Path, env: dict[str, str], current: Run, acks: dict[str, set[str]]) -> Run:
    """One event; the run that serves the app after it, writing again."""
    if kind == "kill-dynosim":
        current.kill()
        fresh = Run(app, env, acks)
        fresh.wait_for(UP, START_TIMEOUT)
        return fresh
    if kind == "cycle":
        dynosim(app, env, "ps:restart", "worker")
        current.wait_for(UP, RECOVER_TIMEOUT)
        return current
    addon = "heroku-postgresql" if kind == "kill-postgres" else "heroku-redis"
    name, pid = server_of(app, env, addon)
    os.kill(pid, signal.SIGKILL)
    current.wait_for(rf"\({re.escape(name)}\): the server is up again on port", RECOVER_TIMEOUT)
    return current


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=22)
    options = parser.parse_args()
    result = run(options.count, options.seed)
    print(f"{result.figure} (goal: {result.goal})")
    for failure in result.failures:
        print(f"FAILED {failure.description}\n  replay: {failure.replay}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
