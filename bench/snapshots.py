"""snapshot:load against pg_restore of a dump of the same state.

The app is bench/reset.py's (50 tables with an index each, migrated in its release phase), its tables
filled with 100,000 rows in all, then saved once with `App.snapshot_save`. Timed, alternating:
- dynosim: `App.snapshot_load(NAME)` (the snapshot checked, its Postgres template copied into a new
  database and swapped in for the app's, the release left as it is);
- pg_restore: `createdb` and `pg_restore --no-owner` of the snapshot's own dump file into it, the
  restore a user runs by hand (the new database dropped afterwards, untimed).
Medians are reported. Goal (issue 21): ≤ 0.3x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, make_app, median, spread
from bench.reset import MIGRATE_PY, TABLES, fill

GOAL = 0.3
NAME = "bench"


def measure(rounds: int) -> dict[str, object]:
    import psycopg

    import dynosim
    from dynosim.addons.manage import psql_binary
    from dynosim.addons.services.postgres_native import SUPERUSER

    app_dir = make_app(
        "snapshot-app",
        {"Procfile": "release: python migrate.py\nweb: python -m http.server $PORT\n",
         "requirements.txt": "psycopg[binary]>=3.1\n", "migrate.py": MIGRATE_PY},
    )  # fmt: skip
    bindir = Path(psql_binary()).parent
    times: dict[str, list[float]] = {"dynosim": [], "pg_restore": []}
    app = dynosim.App(app_dir, addons=["heroku-postgresql"], addons_backend="native", cache_dir=CACHE_DIR)
    app.start()
    try:
        with psycopg.connect(app.config()["DATABASE_URL"], autocommit=True) as conn:
            fill(conn)
        app.snapshot_save(NAME)
        [record] = json.loads((app_dir / ".dynosim" / "addons.json").read_text())["addons"]
        dump = next((app_dir / ".dynosim" / "snapshots" / NAME).glob("*.dump"))
        admin = {"PGHOST": "127.0.0.1", "PGPORT": str(record["port"]), "PGUSER": SUPERUSER,
                 "PGPASSWORD": str(record["admin_password"]), "PATH": "/usr/bin:/bin"}  # fmt: skip
        for round_ in range(rounds):
            start = time.perf_counter()
            app.snapshot_load(NAME)
            times["dynosim"].append(time.perf_counter() - start)
            scratch = f"restored_{round_}"
            start = time.perf_counter()
            subprocess.run([str(bindir / "createdb"), scratch], env=admin, check=True)
            subprocess.run(
                [str(bindir / "pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "-d", scratch, str(dump)],
                env=admin,
                check=True,
            )
            times["pg_restore"].append(time.perf_counter() - start)
            subprocess.run([str(bindir / "dropdb"), scratch], env=admin, check=True)
    finally:
        app.stop()
    ms = {who: [t * 1000 for t in values] for who, values in times.items()}
    ours, theirs = median(ms["dynosim"]), median(ms["pg_restore"])
    return {
        "name": f"snapshot:load of {TABLES} tables, 100,000 rows",
        "dynosim": f"App.snapshot_load {ours:.0f} ms (range {spread(ms['dynosim'])})",
        "baseline": f"createdb + pg_restore of its dump {theirs:.0f} ms (range {spread(ms['pg_restore'])})",
        "ratio": ours / theirs,
        "goal": f"≤ {GOAL}x",
        "met": ours / theirs <= GOAL,
        "raw": ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    r = measure(parser.parse_args().rounds)
    print(r["name"])
    print(f"  {r['dynosim']}")
    print(f"  {r['baseline']}")
    print(f"  ratio {r['ratio']:.2f}x; goal {r['goal']}: {'met' if r['met'] else 'NOT met'}")
    return 0 if r["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
