"""Heroku Postgres backups and pg:pull of a 1 GB-class database: dynosim's verbs against the same tools by hand.

The app is a stdlib web dyno with a heroku-postgresql add-on on the native backend, run by `dynosim run` for
the whole benchmark, so every command, dynosim's and the baseline's, meets the same running server. Its
database is filled with generate_series (two tables, four indexes) until it is --size-mb on disk
(pg_database_size; default 1024), and the size built is printed.

Then alternating rounds (dynosim first in odd rounds, the baseline first in even ones), each command timed
from launch to exit:

(a) `dynosim pg:backups:capture` + `dynosim pg:backups:restore --confirm APP` against bare `pg_dump -Fc` of the
    same database to a file + `createdb` + `pg_restore --no-owner --no-acl --exit-on-error` of it into that
    fresh database: the same tools, the same server, the flags dynosim's restore uses. Goal: ≤ 1.1x.
    dynosim's restore also swaps the restored database in and drops the one it replaced, whose
    checkpoint writes out what the restore left in memory; so the by-hand restore's dropdb of the copy
    it replaces (one untimed warm-up round makes the first) is timed apart, and a second ratio counts
    it. Each step's own times are printed too.
(b) `dynosim pg:pull DATABASE <new db>` against `createdb` + `pg_dump --verbose -F c -Z 0 -N _heroku |
    pg_restore --verbose -F c --no-acl --no-owner --single-transaction -d <new db>` in a shell: Heroku's
    flags and the one dynosim adds (a failed pull leaves nothing behind), on both sides. The "local"
    server of both is the add-on's own (PGHOST/PGPORT/PGUSER/PGPASSWORD name its superuser). Goal: ≤ 1.1x.
(c) the peak RSS of the dynosim command's process tree, the client tools it runs (pg_dump, pg_restore, psql,
    createdb, dropdb) left out (psutil, every 20 ms),
    during one more restore and one more pull after the timed rounds (sampling takes CPU the timed runs'
    tools would miss), printed beside the dump's size: flat is the same peak at any --size-mb.

Medians of the rounds; no absolute time is asserted. Everything it made (databases, backups, the run, the
app folder and the add-on's data with it) is removed at the end. Loopback only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, WORK_DIR, free_port, launch, median, prime_bytecode, spread, stop, tool

GOAL = 1.1
APP = "pg-backups-bench"
BATCH = 100_000  # rows per table per insert: the size is checked after each
TOOLS = frozenset({"pg_dump", "pg_restore", "psql", "createdb", "dropdb"})  # not dynosim's memory
SUPERUSER = "postgres"

PROCFILE = "web: python -m http.server $PORT --bind 0.0.0.0\n"
APP_JSON = json.dumps({"name": APP, "addons": ["heroku-postgresql"]}) + "\n"
SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, digest text NOT NULL, label text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE events (id bigint PRIMARY KEY, item_id bigint NOT NULL REFERENCES items, kind int NOT NULL,
                     payload text NOT NULL);
CREATE INDEX items_digest ON items (digest);
CREATE INDEX events_item_id ON events (item_id);
"""
FILL = (
    "INSERT INTO items SELECT g, md5(g::text), 'item ' || g, now() - g * interval '1 second'"
    " FROM generate_series(%(first)s::bigint, %(last)s) AS g",
    "INSERT INTO events SELECT g, g, g %% 7, md5((g * 31)::text) || md5((g * 17)::text)"
    " FROM generate_series(%(first)s::bigint, %(last)s) AS g",
)


@dataclass
class Times:
    dynosim: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # each step's own times, for the breakdown

    def part(self, name: str, took: float) -> float:
        self.parts.setdefault(name, []).append(took)
        return took


@dataclass
class Results:
    size: int  # bytes, pg_database_size of what was built
    dump_size: int  # bytes, the last pg_dump -Fc file by hand
    backups: Times
    pull: Times
    restore_rss: int  # bytes, the peak of one more restore, sampled (and not timed)
    pull_rss: int


class Bench:
    """The app, its run, and the tools by hand, all on the one add-on's server."""

    def __init__(self, size_mb: int) -> None:
        self.folder = WORK_DIR / APP
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        for name, text in {"Procfile": PROCFILE, "app.json": APP_JSON, "requirements.txt": ""}.items():
            (self.folder / name).write_text(text)
        who = ["-c", "user.email=bench@example.com", "-c", "user.name=bench"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "pg backups bench"]):
            subprocess.run(["git", "-C", str(self.folder), *who, *args], check=True, capture_output=True)
        self.size_mb = size_mb
        self.scratch = WORK_DIR / f"{APP}-scratch"
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        self.made = 0  # databases made by a round
        self.replaced = ""  # the by-hand restore's last copy, which the next one replaces
        self.expected = (0, 0)  # rows of items and events, once built

    # --- the run and its add-on --------------------------------------------------------------------

    def start(self) -> None:
        self.log = self.folder.parent / f"{APP}.log"
        env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
        argv = [tool("dynosim"), "run", "--addons", "native", "--port", str(free_port())]
        with self.log.open("w") as out:
            self.run = launch(argv, env, self.folder, stdout=out)
        deadline = time.monotonic() + 300
        while "State changed from starting to up" not in self.log.read_text(errors="replace"):
            if self.run.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dynosim run did not come up:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        record = json.loads((self.folder / ".dynosim" / "addons.json").read_text())["addons"][0]
        self.port, self.database, self.role = int(record["port"]), str(record["database"]), str(record["user"])
        self.password, self.admin_password = str(record["password"]), str(record["admin_password"])
        self.url = f"postgres://{self.role}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def close(self) -> None:
        try:
            if getattr(self, "run", None) is not None:
                stop(self.run, timeout=120)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            if getattr(self, "log", None) is not None:
                self.log.unlink(missing_ok=True)

    def url_of(self, database: str) -> str:
        return f"postgres://{self.role}:{self.password}@127.0.0.1:{self.port}/{database}"

    def local_env(self) -> dict[str, str]:
        """The user's libpq environment for the "local" side: the add-on's server, as its superuser."""
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": SUPERUSER,
            "PGPASSWORD": self.admin_password,
        }

    # --- the data -----------------------------------------------------------------------------------

    def build(self) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(SCHEMA)
            first = 1
            while True:
                for insert in FILL:
                    conn.execute(insert, {"first": first, "last": first + BATCH - 1})
                first += BATCH
                size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
                if size >= self.size_mb * 1024 * 1024:
                    conn.execute("VACUUM ANALYZE")
                    return size

    def fingerprint(self, url: str) -> tuple[int, int]:
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events)").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    def dropdb(self, name: str) -> None:
        _run([_bin("dropdb"), "--if-exists", "--force", name], env=self.local_env())

    def new_name(self) -> str:
        self.made += 1
        return f"bench_copy_{self.made}"

    # --- (a) backups --------------------------------------------------------------------------------

    def dynosim_backup(self, times: Times, peak: Peak | None = None) -> float:
        took = times.part("capture", self.dynosim("pg:backups:capture"))
        return took + times.part("restore", self.dynosim("pg:backups:restore", "--confirm", APP, watch=peak))

    def backup_by_hand(self, times: Times) -> tuple[float, float, int]:
        """pg_dump -Fc, then createdb + pg_restore of it; and apart, the dropdb of the copy this one
        replaces (dynosim's restore drops the database it swapped out, and that drop's checkpoint writes
        what the restore left in memory): the time without it, with it, and the dump's size."""
        dump = self.scratch / "by-hand.dump"
        fresh = self.new_name()
        took = times.part("pg_dump -Fc", _timed([_bin("pg_dump"), "-Fc", "-f", str(dump), "-d", self.url]))
        restore = [_bin("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "-d", self.url_of(fresh), str(dump)]
        restored = _timed([_bin("createdb"), "-O", self.role, fresh], env=self.local_env()) + _timed(restore)
        took += times.part("createdb + pg_restore", restored)
        dropped = times.part("dropdb of the copy replaced", self.replace_copy(fresh))
        size = dump.stat().st_size
        dump.unlink()
        return took, took + dropped, size

    def replace_copy(self, fresh: str) -> float:
        began = time.perf_counter()
        if self.replaced:
            self.dropdb(self.replaced)
        self.replaced = fresh
        return time.perf_counter() - began

    # --- (b) pull -----------------------------------------------------------------------------------

    def dynosim_pull(self, peak: Peak | None = None) -> float:
        target = self.new_name()
        took = self.dynosim("pg:pull", "DATABASE", target, env=self.local_env(), watch=peak)
        if self.fingerprint(self.url_of_local(target)) != self.expected:
            raise SystemExit(f"dynosim pg:pull DATABASE {target}: the copy differs from the add-on's database")
        self.dropdb(target)
        return took

    def pull_by_hand(self) -> float:
        target = self.new_name()
        env = self.local_env()
        took = _timed([_bin("createdb"), target], env=env)
        dump = [_bin("pg_dump"), "--verbose", "-F", "c", "-Z", "0", "-N", "_heroku",
                "-U", self.role, "-h", "127.0.0.1", "-p", str(self.port), self.database]  # fmt: skip
        restore = [_bin("pg_restore"), "--verbose", "-F", "c", "--no-acl", "--no-owner", "--single-transaction",
                   "-d", target]  # fmt: skip
        piped = f"PGUSER={self.role} PGPASSWORD={self.password} PGSSLMODE=prefer {_shell(dump)} | {_shell(restore)}"
        took += _timed(["bash", "-o", "pipefail", "-c", piped], env=env)
        self.dropdb(target)
        return took

    def url_of_local(self, database: str) -> str:
        return f"postgres://{SUPERUSER}:{self.admin_password}@127.0.0.1:{self.port}/{database}"

    # --- dynosim's commands ------------------------------------------------------------------------

    def dynosim(self, *args: str, env: dict[str, str] | None = None, watch: Peak | None = None) -> float:
        """One `dynosim ARGS` in the app's folder, its bytecode read from outside the repo (as bench.common's
        runs read it), timed from launch to exit."""
        argv = [sys.executable, "-X", f"pycache_prefix={prime_bytecode()}", tool("dynosim"), *args]
        full_env = {**(env or os.environ), "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
        began = time.perf_counter()
        proc = psutil.Popen(argv, cwd=self.folder, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        with watch.sampling(proc) if watch else _nothing():
            out, err = proc.communicate()
        took = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(
                f"dynosim {' '.join(args)} failed ({proc.returncode}):\n{out.decode()}{err.decode()[-3000:]}"
            )
        return took


class Peak:
    """The highest RSS of a process tree, the Postgres client tools it runs left out, sampled every 20 ms."""

    def __init__(self) -> None:
        self.bytes = 0

    @contextmanager
    def sampling(self, proc: psutil.Process) -> Iterator[None]:
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                self.bytes = max(self.bytes, _tree_rss(proc))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def _tree_rss(proc: psutil.Process) -> int:
    """The RSS of dynosim's own processes in the tree: not the client tools, and not a child caught
    between fork and exec (still a copy of dynosim, whose pages it shares: counted twice otherwise)."""
    try:
        family = [proc, *proc.children(recursive=True)]
        own = proc.cmdline()
    except psutil.Error:
        return 0
    total = 0
    for member in family:
        try:
            if member.name() in TOOLS or (member.pid != proc.pid and member.cmdline() == own):
                continue
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@functools.cache
def _bindir() -> Path:
    """Where dynosim finds the server's client tools (psql's folder), so both sides run the same binaries."""
    from dynosim.addons.manage import psql_binary

    return Path(psql_binary()).parent


def _bin(name: str) -> str:
    found = _bindir() / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def _shell(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    _run(argv, env)
    return time.perf_counter() - began


def _alternate(rounds: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    for i in range(rounds):
        for step in (first, second) if i % 2 == 0 else (second, first):
            step()


@functools.cache
def results(rounds: int, size_mb: int) -> Results:
    """Builds the database once and runs every round of (a) and (b); run_all asks for both from one run."""
    bench = Bench(size_mb)
    try:
        bench.start()
        print(f"building a {size_mb} MB database with generate_series…", file=sys.stderr, flush=True)
        size = bench.build()
        print(f"built {size / 2**20:.0f} MB (pg_database_size)", file=sys.stderr, flush=True)
        bench.expected = bench.fingerprint(bench.url)
        backups, pull, warm_up = Times(), Times(), Times()
        bench.backup_by_hand(warm_up)  # untimed: the first copy to replace, the build's writes checkpointed
        with_drop: list[float] = []
        dump_size = 0

        def by_hand() -> None:
            nonlocal dump_size
            took, dropped, dump_size = bench.backup_by_hand(backups)
            backups.baseline.append(took)
            with_drop.append(dropped)

        _alternate(rounds, lambda: backups.dynosim.append(bench.dynosim_backup(backups)), by_hand)
        backups.parts["by hand, with the dropdb"] = with_drop
        if bench.fingerprint(bench.url) != bench.expected:
            raise SystemExit("after pg:backups:restore the add-on's database is not what was captured")
        _alternate(rounds, lambda: pull.dynosim.append(bench.dynosim_pull()),
                   lambda: pull.baseline.append(bench.pull_by_hand()))  # fmt: skip
        # memory in runs of their own: sampling every 20 ms takes CPU the timed runs' tools would miss
        restore_rss, pull_rss = Peak(), Peak()
        bench.dynosim_backup(Times(), restore_rss)
        bench.dynosim_pull(pull_rss)
        return Results(size, dump_size, backups, pull, restore_rss.bytes, pull_rss.bytes)
    finally:
        bench.close()


def _row(name: str, times: Times, dynosim: str, baseline: str, rss: int, dump_size: int) -> dict[str, object]:
    d, b = median(times.dynosim), median(times.baseline)
    with_drop = times.parts.get("by hand, with the dropdb")
    dropped = f"; with the dropdb of the copy it replaces {median(with_drop):.2f} s" if with_drop else ""
    return {
        "name": name,
        "dynosim": f"{dynosim} {d:.2f} s (range {spread(times.dynosim)}); peak RSS {rss / 2**20:.0f} MB "
        f"(dump {dump_size / 2**20:.0f} MB)",
        "baseline": f"{baseline} {b:.2f} s (range {spread(times.baseline)}){dropped}",
        "ratio": d / b,
        "ratio_with_drop": d / median(with_drop) if with_drop else None,
        "goal": f"≤ {GOAL}x",
        "met": d / b <= GOAL,
        "raw": {"dynosim": times.dynosim, "baseline": times.baseline, "parts": times.parts, "peak_rss": rss},
    }


def measure_backups(rounds: int, size_mb: int) -> dict[str, object]:
    r = results(rounds, size_mb)
    return _row(f"pg:backups capture + restore ({r.size / 2**20:.0f} MB)", r.backups,
                "capture + restore", "pg_dump -Fc + pg_restore", r.restore_rss, r.dump_size)  # fmt: skip


def measure_pull(rounds: int, size_mb: int) -> dict[str, object]:
    r = results(rounds, size_mb)
    return _row(f"pg:pull ({r.size / 2**20:.0f} MB)", r.pull, "pg:pull", "pg_dump | pg_restore",
                r.pull_rss, r.dump_size)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--size-mb", type=int, default=1024, help="the database's size on disk (default 1024)")
    args = parser.parse_args()
    for row in (measure_backups(args.rounds, args.size_mb), measure_pull(args.rounds, args.size_mb)):
        raw = row["raw"]
        assert isinstance(raw, dict)
        print(f"{row['name']}: dynosim {row['dynosim']}; by hand {row['baseline']}")
        rounds = " ".join(f"{d:.2f}/{b:.2f}" for d, b in zip(raw["dynosim"], raw["baseline"], strict=True))
        print(f"  ratio {row['ratio']:.2f}x (goal {row['goal']}): {'met' if row['met'] else 'NOT met'}; "
              f"rounds (dynosim/by hand, s): {rounds}")  # fmt: skip
        if row["ratio_with_drop"] is not None:
            print(
                f"  against the by-hand restore with the dropdb of the copy it replaces: {row['ratio_with_drop']:.2f}x"
            )
        for part, values in raw["parts"].items():
            print(f"  {part}: {median(values):.2f} s (" + " ".join(f"{v:.2f}" for v in values) + ")")


if __name__ == "__main__":
    main()
