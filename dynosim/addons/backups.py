"""pg:backups: Heroku PGBackups on the app's own Postgres, with the real pg_dump and pg_restore.

Backups belong to the app, not to an add-on: `<state_dir>/backups/<id>.dump` (pg_dump's custom format,
owners and ACLs kept, as Heroku's dumps have them; 0600) and the list in `<state_dir>/backups.json`
(0600, `write_private`), so they survive restarts, pg:reset, restores and `addons:destroy`, and a
backup of a destroyed database restores into another. Ids are Heroku's: one number per app for every
transfer, after a letter for its kind (b manual backup, a scheduled backup, r restore): b001, a002, r003.

A restore goes into a new database, as Heroku's docs restore a Heroku dump (`pg_restore --no-owner
--no-acl`, as the app's role through `--role`, so the app owns every object), and only when that
succeeded is it swapped in: the app's connections ended, the old database renamed aside, the new one
renamed to the app's name, the old one dropped. A bad id, a file that is not a dump, a URL that does
not answer, or a restore that fails halfway leaves the app's database as it was and no scratch
database behind. Backups and restores connect as dynosim's superuser, as Heroku's own credentials do:
the app's pool may hold every connection its role is allowed.

A schedule (pg:backups:schedule) is kept here too; a running `dynosim run` takes the daily backup at
its hour on the run's clock (`run_schedules`), and keeps the plan's daily and weekly ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dynosim.addons import STATE_FILE as ADDONS_FILE
from dynosim.addons import State, pgtools
from dynosim.addons.plans import postgres_plan
from dynosim.errors import AddonError
from dynosim.privatefile import write_private

STATE_FILE = "backups.json"
FOLDER = "backups"
CAPTURE_HINT = "Capture one with dynosim pg:backups:capture"
# pg:backups:schedule --at (Heroku's CLI: lib commands/pg/backups/schedule): whole hours, a zone after
AT = re.compile(r"^(0?\d|1\d|2[0-3]):00 ?(\S*)$")
ZONES = {
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "MST": "America/Boise", "MDT": "America/Boise",
    "CST": "America/Chicago", "CDT": "America/Chicago", "EST": "America/New_York", "EDT": "America/New_York",
    "Z": "UTC", "GMT": "Europe/London", "BST": "Europe/London", "CET": "Europe/Paris", "CEST": "Europe/Paris",
}  # fmt: skip
URL_TIMEOUT = 30  # seconds for a backup URL to answer


@dataclass(frozen=True)
class Transfer:
    """One backup or restore, as Heroku's transfers API describes it."""

    num: int
    kind: str  # "backup" | "restore"
    from_name: str  # a backup's database (DATABASE); a restore's source (b001, a file, a URL)
    to_name: str  # a restore's database; "" for a backup
    addon: str  # the add-on's name: postgresql-curly-12345
    created_at: float
    finished_at: float | None = None
    succeeded: bool = False
    scheduled: bool = False
    source_bytes: int = 0  # the database's size (pg_database_size) when it was backed up
    processed_bytes: int = 0  # the dump's size
    error: str = ""
    pid: int = 0  # who runs it, while it runs: a transfer whose process died failed
    logs: tuple[tuple[float, str], ...] = ()

    @property
    def id(self) -> str:
        letter = "r" if self.kind == "restore" else "a" if self.scheduled else "b"
        return f"{letter}{self.num:03d}"

    @property
    def is_backup(self) -> bool:
        return self.kind == "backup"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["logs"] = [list(entry) for entry in self.logs]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transfer:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["logs"] = tuple((float(when), str(what)) for when, what in data.get("logs", ()))
        return cls(**known)


@dataclass(frozen=True)
class Schedule:
    """A daily backup of one database at an hour of a time zone (pg:backups:schedule)."""

    name: str  # "DATABASE_URL": Heroku names a schedule by the attachment's config var
    as_name: str  # "DATABASE"
    addon: str  # postgresql-curly-12345
    hour: int
    timezone: str  # "UTC", "America/New_York"

    def next_after(self, moment: datetime) -> datetime:
        """The first run after `moment` (aware), as an aware UTC time."""
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        day: date = local.date()
        while True:
            when = datetime(day.year, day.month, day.day, self.hour, tzinfo=zone)
            if when > moment:
                return when.astimezone(UTC)
            day += timedelta(days=1)


@dataclass
class Ledger:
    """backups.json: the transfers, the schedules, and the next transfer number."""

    path: Path
    next_num: int = 1
    transfers: list[Transfer] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path) -> Ledger:
        path = Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as error:
            raise AddonError(f"{path}: cannot be read ({error}); fix or remove it") from None
        try:
            ledger = cls(
                path,
                int(data.get("next_num", 1)),
                [Transfer.from_json(t) for t in data.get("transfers", [])],
                [Schedule(**s) for s in data.get("schedules", [])],
            )
        except (TypeError, ValueError) as error:
            raise AddonError(f"{path}: not a list of backups dynosim wrote ({error}); fix or remove it") from None
        ledger.transfers = [_settle_orphan(t) for t in ledger.transfers]
        return ledger

    def save(self) -> None:
        data = {
            "next_num": self.next_num,
            "transfers": [t.as_json() for t in self.transfers],
            "schedules": [asdict(s) for s in self.schedules],
        }
        write_private(self.path, json.dumps(data, indent=1) + "\n")

    def put(self, transfer: Transfer) -> None:
        self.transfers = [t for t in self.transfers if t.num != transfer.num] + [transfer]


def _settle_orphan(transfer: Transfer) -> Transfer:
    """A transfer still running in a process that is gone (killed mid-dump) failed."""
    if transfer.finished_at is not None or not transfer.pid or _alive(transfer.pid):
        return transfer
    return replace(transfer, finished_at=transfer.created_at, error="the process running it ended", pid=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _ledger(state_dir: Path) -> Iterator[Ledger]:
    """The ledger, read and written back under a lock: a scheduled capture in a run and a command may
    meet (the lock is held for the bookkeeping only, never while pg_dump runs)."""
    folder = Path(state_dir) / FOLDER
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = Ledger.load(state_dir)
        yield ledger
        ledger.save()


def transfers(state_dir: Path) -> list[Transfer]:
    """Every transfer, newest first."""
    if not (Path(state_dir) / STATE_FILE).exists():
        return []
    return sorted(Ledger.load(state_dir).transfers, key=lambda t: (t.created_at, t.num), reverse=True)


def dump_path(state_dir: Path, transfer: Transfer) -> Path:
    return Path(state_dir) / FOLDER / f"{transfer.id}.dump"


# --- finding a backup -------------------------------------------------------------------------------


def find(state_dir: Path, app_name: str, wanted: str) -> Transfer:
    """The transfer named `wanted`, by its number as Heroku's CLI finds it (b001, b1 and a001 name
    transfer 1), or Heroku's error."""
    number = re.fullmatch(r"[abcr](\d+)", wanted.strip().lower())
    if number is not None:
        for transfer in transfers(state_dir):
            if transfer.num == int(number[1]):
                return transfer
    raise AddonError(f"Backup {wanted} not found for {app_name} (see dynosim pg:backups)")


def latest(state_dir: Path, app_name: str) -> Transfer:
    """The newest backup that completed: what restore, download and url take without an id."""
    done = [t for t in transfers(state_dir) if t.is_backup and t.succeeded]
    if not done:
        raise AddonError(f"No backups for {app_name}. {CAPTURE_HINT}")
    return max(done, key=lambda t: (t.finished_at or 0, t.num))


def completed(state_dir: Path, app_name: str, wanted: str | None) -> tuple[Transfer, Path]:
    """A backup that completed and its file: `wanted`, or the latest."""
    transfer = latest(state_dir, app_name) if wanted is None else find(state_dir, app_name, wanted)
    if not transfer.is_backup:
        raise AddonError(f"{transfer.id} is a restore, not a backup; name a backup (see dynosim pg:backups)")
    if not transfer.succeeded:
        raise AddonError(f"Backup {transfer.id} for {app_name} did not complete successfully")
    path = dump_path(state_dir, transfer)
    if not path.is_file():
        raise AddonError(f"the file of backup {transfer.id} is gone ({path}); capture a new one")
    return transfer, path


# --- capture ----------------------------------------------------------------------------------------


def start(state_dir: Path, record: Mapping[str, Any], as_name: str, *, scheduled: bool = False) -> Transfer:
    """Numbers a new backup and records it as running (pg:backups shows it so)."""
    with _ledger(state_dir) as ledger:
        transfer = Transfer(
            ledger.next_num, "backup", as_name, "", str(record["name"]), time.time(), scheduled=scheduled,
            pid=os.getpid(),
        )  # fmt: skip
        ledger.next_num += 1
        ledger.put(transfer)
    return transfer


def capture(state_dir: Path, record: Mapping[str, Any], transfer: Transfer) -> Transfer:
    """pg_dump -Fc of the add-on's database into the backup's file (a scratch name, renamed when whole),
    then the plan's retention; the finished transfer. A failure is recorded, and raised."""
    final = dump_path(state_dir, transfer)
    logs = [(time.time(), f"pg_dump -Fc of {transfer.from_name} ({transfer.addon}) started")]
    try:
        size = dump(record, final)
    except BaseException as error:
        failed = replace(transfer, finished_at=time.time(), error=_said(error), pid=0,
                         logs=(*logs, (time.time(), f"failed: {_said(error)}")))  # fmt: skip
        with _ledger(state_dir) as ledger:
            ledger.put(failed)
        raise
    dumped = final.stat().st_size
    done = replace(
        transfer, finished_at=time.time(), succeeded=True, pid=0, source_bytes=size,
        processed_bytes=dumped, logs=(*logs, (time.time(), f"finished: {dumped} bytes")),
    )  # fmt: skip
    with _ledger(state_dir) as ledger:
        ledger.put(done)
        for gone in expired(ledger.transfers, done, str(record.get("plan") or "heroku-postgresql")):
            ledger.transfers.remove(gone)
            with contextlib.suppress(FileNotFoundError):
                dump_path(state_dir, gone).unlink()
    return done


def dump(record: Mapping[str, Any], final: Path) -> int:
    """pg_dump -Fc of the add-on's database into `final` (a scratch name beside it, renamed when whole,
    removed on failure); the database's size, as pg:backups reports it."""
    # as dynosim's superuser, as Heroku's own credentials back up: the app's pool may hold all of its
    # role's connections, and a database over its plan's storage has its role's privileges cut
    target = pgtools.superuser_target(record, str(record["database"]))
    tools = pgtools.tools_for(record)
    scratch = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        size = pgtools.run(tools.command("psql", target, "-XAtc", "SELECT pg_database_size(current_database())"))
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            pgtools.pipe(tools.command("pg_dump", target, "--format=custom"), out)
            os.fsync(out.fileno())
        os.replace(scratch, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
        raise
    return int(size.strip() or 0)


def expired(every: list[Transfer], done: Transfer, plan: str) -> list[Transfer]:
    """What the plan no longer keeps once `done` is in: manual backups beyond its limit (the oldest go
    first, as Heroku's do), or scheduled ones beyond its daily and weekly ones."""
    limits = postgres_plan(plan)
    kind = [t for t in every if t.is_backup and t.scheduled == done.scheduled and (t.finished_at or t is done)]
    kind.sort(key=lambda t: t.num, reverse=True)
    if not done.scheduled:
        return kind[limits.manual_backups :]
    older = kind[limits.scheduled_daily :]
    weeks: set[tuple[int, int]] = set()
    gone = []
    for transfer in older:  # newest first: each week keeps its newest
        week = datetime.fromtimestamp(transfer.created_at, UTC).isocalendar()[:2]
        if week in weeks or len(weeks) >= limits.scheduled_weekly:
            gone.append(transfer)
        else:
            weeks.add(week)
    return gone


# --- restore ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What a restore reads: a backup's file, a dump on disk, or a URL's body."""

    label: str  # how pg:backups shows it: "b001", "latest.dump", "https://…"
    path: Path | None = None
    url: str | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self.path is not None:
            with open(self.path, "rb") as stream:
                yield stream
            return
        assert self.url is not None
        request = urllib.request.Request(self.url, headers={"User-Agent": "dynosim pg:backups:restore"})
        try:
            response = urllib.request.urlopen(request, timeout=URL_TIMEOUT)
        except urllib.error.HTTPError as error:
            raise AddonError(f"{self.label} answered {error.code} {error.reason}; check the URL") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AddonError(f"{self.label} does not answer ({reason}); check the URL") from None
        with response:
            yield response


def source(state_dir: Path, app_name: str, wanted: str | None) -> Source:
    """restore's BACKUP: an id (default the latest completed backup), an http(s):// URL, or a dump file."""
    if wanted is not None and re.match(r"^https?://", wanted):
        parts = urllib.parse.urlsplit(wanted)  # the label leaves out credentials and signed query strings
        where = parts.netloc.rpartition("@")[2]
        return Source(f"{parts.scheme}://{where}{parts.path}", url=_dropbox(wanted))
    if wanted is None or re.fullmatch(r"[abcr]\d+", wanted.lower()):
        transfer, path = completed(state_dir, app_name, wanted)
        return Source(transfer.id, path=path)
    path = Path(wanted).expanduser()
    if not path.is_file():
        raise AddonError(
            f"{wanted}: no such backup or file; give a backup id (b001, see dynosim pg:backups), a dump file, "
            "or an http(s):// URL"
        )
    return Source(str(path), path=path)


def _dropbox(url: str) -> str:
    """Heroku's CLI asks Dropbox for the file itself, not its page."""
    if re.match(r"^https?://www\.dropbox\.com", url) and not url.endswith("dl=1"):
        if url.endswith("dl=0"):
            return url[: -len("dl=0")] + "dl=1"
        return url + ("&dl=1" if "?" in url else "?dl=1")
    return url


def restore(state_dir: Path, record: Mapping[str, Any], as_name: str, src: Source) -> Transfer:
    """Restores `src` into a new database, then swaps it in for the app's (see the module's docstring).
    The transfer (r00N) is recorded, failed or not; a failure leaves the app's database as it was."""
    with _ledger(state_dir) as ledger:
        transfer = Transfer(ledger.next_num, "restore", src.label, as_name, str(record["name"]), time.time(),
                            pid=os.getpid())  # fmt: skip
        ledger.next_num += 1
        ledger.put(transfer)
    try:
        restored = restore_and_swap(record, src)
    except BaseException as error:
        with _ledger(state_dir) as ledger:
            ledger.put(replace(transfer, finished_at=time.time(), error=_said(error), pid=0))
        raise
    done = replace(transfer, finished_at=time.time(), succeeded=True, pid=0, processed_bytes=restored)
    with _ledger(state_dir) as ledger:
        ledger.put(done)
    return done


def restore_and_swap(record: Mapping[str, Any], src: Source) -> int:
    """`src` restored into a new database (a failure drops it, the app's untouched), then swapped in;
    the bytes read."""
    tools = pgtools.tools_for(record)
    database, user = str(record["database"]), str(record["user"])
    scratch = f"{database}_restore_{secrets.token_hex(4)}"
    admin = pgtools.superuser_target(record)
    with src.open() as stream:  # a URL that does not answer fails here, before anything is made
        counted = _Counted(stream)
        pgtools.run(tools.command("psql", admin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"),
                    create_sql(scratch, user))  # fmt: skip
        try:
            restore = tools.command(
                "pg_restore", admin.on(scratch), f"--role={user}", "--no-owner", "--no-acl", "--exit-on-error"
            )  # every object the app's role's (SET ROLE), its connections left to the app
            feed: Any = stream if src.path is not None else counted  # a file: pg_restore reads it itself
            pgtools.pipe(feed, restore)
        except BaseException as error:
            drop(tools, admin, scratch)
            if isinstance(error, AddonError):
                raise AddonError(
                    f"restoring {src.label} failed and the app's database is untouched: {error}{_advice(str(error))}"
                ) from None
            raise
    size = src.path.stat().st_size if src.path is not None else counted.bytes
    swap_in(record, scratch)
    return size


def swap_in(record: Mapping[str, Any], scratch: str, *, make: str = "", drop_later: bool = False) -> None:
    """The database `scratch`, whole, becomes the app's (its sessions ended); the old one is dropped,
    on a thread of its own with `drop_later` (DROP DATABASE waits for a checkpoint: the app need not).
    `make`: SQL that makes `scratch`, run first in the same session. A failed swap puts the app's
    database back and drops `scratch`."""
    tools = pgtools.tools_for(record)
    admin = pgtools.superuser_target(record)
    database = str(record["database"])
    aside = f"{database}_old_{secrets.token_hex(4)}"
    try:
        pgtools.run(tools.command("psql", admin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"),
                    make + _swap_sql(database, scratch, aside))  # fmt: skip
    except BaseException:
        with contextlib.suppress(AddonError):
            pgtools.run(tools.command("psql", admin, "-X", "-q", "-f", "-"), _unswap_sql(database, scratch, aside))
        drop(tools, admin, scratch)
        raise
    if drop_later:
        threading.Thread(target=drop, args=(tools, admin, aside), name=f"drop {aside}", daemon=True).start()
    else:
        drop(tools, admin, aside)


def _advice(error: str) -> str:
    """What to do about a failed restore, from what failed."""
    if re.search(r"input file|archive|end of file|file header", error):
        return " (is it a whole pg_dump -Fc file? `pg_restore --list FILE` tells)"
    if "reading the input failed" in error:
        return "; check the URL and try again"
    return ""


class _Counted:
    """A URL's body, counting the bytes read from it (for the restore's Size column)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.bytes += len(chunk)
        return chunk


def create_sql(scratch: str, user: str) -> str:
    """A new, empty database for the app's role: what a restore fills."""
    db, role = _ident(scratch), _ident(user)
    return f"""CREATE DATABASE {db} OWNER {role};
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT ALL ON DATABASE {db} TO {role};
"""


def _swap_sql(database: str, scratch: str, aside: str) -> str:
    """No new connections to the app's database, its sessions ended (and waited for: renaming needs
    none), then both renames in one transaction: the app's name always names a whole database."""
    db, name = _ident(database), _literal(database)
    return f"""ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false;
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {name} AND pid <> pg_backend_pid();
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE datname = {name} AND pid <> pg_backend_pid());
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
BEGIN;
ALTER DATABASE {db} RENAME TO {_ident(aside)};
ALTER DATABASE {_ident(scratch)} RENAME TO {db};
COMMIT;
"""


def _unswap_sql(database: str, scratch: str, aside: str) -> str:
    """After a failed swap: the app's database back under its name, open again."""
    return f"""SELECT format('ALTER DATABASE %I RENAME TO %I', {_literal(aside)}, {_literal(database)})
 WHERE EXISTS (SELECT FROM pg_database WHERE datname = {_literal(aside)})
   AND NOT EXISTS (SELECT FROM pg_database WHERE datname = {_literal(database)})
\\gexec
ALTER DATABASE {_ident(database)} WITH ALLOW_CONNECTIONS true;
"""


def drop(tools: pgtools.Tools, admin: pgtools.Target, database: str) -> None:
    with contextlib.suppress(AddonError):  # nothing to drop when CREATE DATABASE itself failed
        pgtools.run(
            tools.command("psql", admin, "-X", "-q", "-c", f"DROP DATABASE IF EXISTS {_ident(database)} WITH (FORCE)")
        )


# --- download, delete -------------------------------------------------------------------------------


def default_output() -> Path:
    """latest.dump, or latest.dump.1, .2… when it is taken (Heroku's CLI)."""
    path = Path("latest.dump")
    index = 1
    while path.exists():
        path = Path(f"latest.dump.{index}")
        index += 1
    return path


def download(dump: Path, output: Path) -> None:
    """Copies a backup's file to `output`, whole or not at all (a scratch name beside it, renamed)."""
    folder = output.parent if str(output.parent) else Path(".")
    scratch = folder / f".{output.name}.{os.getpid()}.tmp"
    try:
        with open(dump, "rb") as src, open(scratch, "xb") as out:
            shutil.copyfileobj(src, out, pgtools.CHUNK)
        os.replace(scratch, output)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
        raise AddonError(f"cannot write {output}: {error.strerror or error}") from None


def delete(state_dir: Path, app_name: str, wanted: str) -> Transfer:
    """Deletes a backup and its file."""
    transfer = find(state_dir, app_name, wanted)
    if not transfer.is_backup:
        raise AddonError(f"{transfer.id} is a restore, not a backup; name a backup (see dynosim pg:backups)")
    with _ledger(state_dir) as ledger:
        ledger.transfers = [t for t in ledger.transfers if t.num != transfer.num]
        with contextlib.suppress(FileNotFoundError):
            dump_path(state_dir, transfer).unlink()
    return transfer


# --- schedules --------------------------------------------------------------------------------------


def parse_at(at: str) -> tuple[str, str]:
    """--at '[HOUR]:00 [TIMEZONE]': the hour as typed and the zone (Heroku's abbreviations, an IANA
    name, or UTC when none is given)."""
    match = AT.match(at.strip())
    if match is None:
        raise AddonError("Invalid schedule format: expected --at '[HOUR]:00 [TIMEZONE]'")
    hour, zone = match[1], match[2]
    if not zone:
        return hour, "UTC"
    if zone.upper() in ZONES:
        return hour, ZONES[zone.upper()]
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AddonError(
            f"Unknown timezone {zone}: give an IANA name (America/New_York) or one of {', '.join(ZONES)}"
        ) from None
    return hour, zone


def schedule(state_dir: Path, as_name: str, addon: str, hour: str, zone: str) -> Schedule:
    """Sets the database's daily backup (one per database: a new one replaces it)."""
    made = Schedule(f"{as_name}_URL", as_name, addon, int(hour), zone)
    with _ledger(state_dir) as ledger:
        ledger.schedules = [s for s in ledger.schedules if s.addon != addon] + [made]
    return made


def schedules(state_dir: Path) -> list[Schedule]:
    if not (Path(state_dir) / STATE_FILE).exists():
        return []
    return list(Ledger.load(state_dir).schedules)


def schedule_named(state_dir: Path, app_name: str, wanted: str | None) -> Schedule:
    """The schedule named (DATABASE, DATABASE_URL, the add-on's name), or the only one."""
    found = schedules(state_dir)
    if not found:
        raise AddonError(f"No schedules on {app_name}")
    if wanted is None:
        if len(found) > 1:
            raise AddonError(f"Specify schedule on {app_name}. Existing schedules: {', '.join(s.name for s in found)}")
        return found[0]
    hits = [s for s in found if wanted.upper() in (s.name, s.as_name) or wanted == s.addon]
    if not hits:
        raise AddonError(f"No daily backups found for {wanted} (see dynosim pg:backups:schedules)")
    return hits[0]


def unschedule(state_dir: Path, chosen: Schedule) -> None:
    with _ledger(state_dir) as ledger:
        ledger.schedules = [s for s in ledger.schedules if s != chosen]


async def run_schedules(state_dir: Path, now: Callable[[], datetime], poll: float, say: Callable[[str], None]) -> None:
    """A run's scheduled backups: each schedule's daily backup (aNNN) at its hour on the run's clock
    (`now`, which --clock-speed may speed up), of the add-on the run has running; forever, until
    cancelled. Hours missed while no run was active are not made up (a daily backup is best effort)."""
    since = now()
    while True:
        await asyncio.sleep(poll)
        moment = now()
        try:
            for due in schedules(state_dir):
                if due.next_after(since) <= moment:
                    await _scheduled_backup(state_dir, due, say)
        except AddonError as error:  # backups.json unreadable: said, and tried again at the next hour
            say(f"pg:backups: scheduled backups: {error}")
        since = moment


async def _scheduled_backup(state_dir: Path, due: Schedule, say: Callable[[str], None]) -> None:
    record = next((r for r in State.load(Path(state_dir) / ADDONS_FILE).records if r.get("name") == due.addon), None)
    if record is None:
        return  # the add-on was destroyed: on Heroku its schedule goes with it
    transfer = start(state_dir, record, due.as_name, scheduled=True)
    try:
        done = await asyncio.to_thread(capture, state_dir, record, transfer)
    except AddonError as error:
        say(f"pg:backups: the scheduled backup {transfer.id} of {due.as_name} failed: {error}")
    else:
        say(f"pg:backups: scheduled backup {done.id} of {due.as_name} ({filesize(done.processed_bytes)})")


# --- how Heroku's CLI writes them -------------------------------------------------------------------


def stamp(when: float | None) -> str:
    """2015-05-15 19:28:59 +0000"""
    return "" if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def status(transfer: Transfer) -> str:
    if transfer.finished_at is not None and transfer.succeeded:
        return f"Completed {stamp(transfer.finished_at)}"
    if transfer.finished_at is not None:
        return f"Failed {stamp(transfer.finished_at)}"
    return f"Running (processed {filesize(transfer.processed_bytes)})"


def filesize(size: int) -> str:
    """As the `bytes` package writes them with two fixed decimals: 512.00B, 1.50KB, 43.10MB."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.2f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def compression(processed: int, total: int) -> str:
    pct = max(0, round((total - processed) / total * 100)) if processed > 0 and total > 0 else 0
    return f" ({pct}% compression)"


def _said(error: BaseException) -> str:
    return str(error) if isinstance(error, AddonError) else type(error).__name__


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
