"""Reset between tests: `App.reset()` against the two ways a suite gets clean data without it.

The app (made here) migrates in its release phase: 50 tables, each with a bigserial key and an index,
and a `migrations` table of 50 seeded rows. Before each timed reset the tables are filled with 100,000
rows in all (2,000 each, untimed), as a test run leaves them. Then, timed, one of:
- dynosim: `App.reset()` (through the run's supervisor, as the `dynosim_clean` fixture calls it);
- pg:reset + migrations: `dynosim pg:reset --confirm APP` (the CLI, as a user runs it), then the
  app's migration command, `python migrate.py` (its release phase's: 50 CREATE TABLEs and the seed
  rows, through psycopg);
- TRUNCATE: one `TRUNCATE … RESTART IDENTITY` of the 50 tables on a psycopg connection already open,
  the hand-written fixture (it keeps the migrations table's rows by leaving it out).
Rounds alternate; medians are reported. Goals (issue 21): ≤ 0.05x of pg:reset + migrations, ≤ 1x of
TRUNCATE.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, dynosim_env, make_app, median, spread, tool

TABLES = 50
ROWS = 2000  # a table: 100,000 rows in all
MIGRATE_GOAL, TRUNCATE_GOAL = 0.05, 1.0
MIGRATIONS = "\n".join(
    [
        "CREATE TABLE IF NOT EXISTS migrations (id serial PRIMARY KEY, name text UNIQUE);",
        *(
            f"CREATE TABLE IF NOT EXISTS t{i} (id bigserial PRIMARY KEY, name text, n int);"
            f"CREATE INDEX IF NOT EXISTS t{i}_n ON t{i} (n);"
            for i in range(TABLES)
        ),
        "INSERT INTO migrations (name) SELECT 'm' || g FROM generate_series(1, 50) g ON CONFLICT DO NOTHING;",
    ]
)
MIGRATE_PY = f'''
import os
import psycopg
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("""{MIGRATIONS}""")
'''


def fill(conn: object) -> None:
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        for i in range(TABLES):
            cur.execute(f"INSERT INTO t{i} (name, n) SELECT 'row ' || g, g FROM generate_series(1, {ROWS}) g")


def measure(rounds: int) -> dict[str, object]:
    import psycopg

    import dynosim

    app_dir = make_app(
        "reset-app",
        {
            "Procfile": "release: python migrate.py\nweb: python -m http.server $PORT\n",
            "requirements.txt": "psycopg[binary]>=3.1\n",
            "migrate.py": MIGRATE_PY,
            "app.json": '{"addons": ["heroku-postgresql"]}',  # declared, as pg:reset needs it
        },
    )
    times: dict[str, list[float]] = {"dynosim": [], "pg:reset": [], "truncate": []}
    app = dynosim.App(app_dir, addons_backend="native", cache_dir=CACHE_DIR)
    app.start()
    try:
        url = app.config()["DATABASE_URL"]
        conn = psycopg.connect(url, autocommit=True)
        truncate = "TRUNCATE " + ", ".join(f"t{i}" for i in range(TABLES)) + " RESTART IDENTITY"
        for _ in range(rounds):
            fill(conn)
            start = time.perf_counter()
            app.reset()
            times["dynosim"].append(time.perf_counter() - start)
            fill(conn)
            start = time.perf_counter()
            conn.execute(truncate)
            times["truncate"].append(time.perf_counter() - start)
            fill(conn)
            conn.close()
            start = time.perf_counter()
            subprocess.run(
                [tool("dynosim"), "pg:reset", "--confirm", app_dir.name],
                cwd=app_dir,
                env=dynosim_env(),
                check=True,
                capture_output=True,
            )
            # the app's own migration command, as its release phase runs it
            subprocess.run(
                [sys.executable, "migrate.py"], cwd=app_dir, env={**dynosim_env(), "DATABASE_URL": url}, check=True
            )
            times["pg:reset"].append(time.perf_counter() - start)
            conn = psycopg.connect(url, autocommit=True)
            app.reset()  # the baseline still matches: the same migrations, empty tables
        conn.close()
    finally:
        app.stop()
    ms = {who: [t * 1000 for t in values] for who, values in times.items()}
    ours, migrate, trunc = median(ms["dynosim"]), median(ms["pg:reset"]), median(ms["truncate"])
    return {
        "name": f"reset of {TABLES} tables, {TABLES * ROWS:,} rows, to after the release phase",
        "dynosim": f"App.reset() {ours:.0f} ms (range {spread(ms['dynosim'])})",
        "baseline": f"pg:reset + migrations {migrate:.0f} ms ({ours / migrate:.3f}x); "
        f"TRUNCATE {trunc:.0f} ms ({ours / trunc:.2f}x)",
        "ratio": ours / trunc,
        "goal": f"≤ {MIGRATE_GOAL}x pg:reset + migrations, ≤ {TRUNCATE_GOAL}x TRUNCATE",
        "met": ours / migrate <= MIGRATE_GOAL and ours / trunc <= TRUNCATE_GOAL,
        "raw": ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    r = measure(parser.parse_args().rounds)
    print(r["name"])
    print(f"  {r['dynosim']}")
    print(f"  {r['baseline']}")
    print(f"  goal {r['goal']}: {'met' if r['met'] else 'NOT met'}")
    return 0 if r["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
