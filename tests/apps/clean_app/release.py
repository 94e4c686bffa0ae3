"""The release phase: the app's migrations, and the rows they seed (a reset must keep those)."""

import os

import psycopg

with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS plans (id serial PRIMARY KEY, name text UNIQUE NOT NULL)")
    conn.execute("INSERT INTO plans (name) VALUES ('free'), ('pro') ON CONFLICT DO NOTHING")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, plan int REFERENCES plans(id), body text NOT NULL)"
    )
print("migrated", flush=True)
