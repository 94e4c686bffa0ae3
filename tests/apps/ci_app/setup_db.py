"""scripts.test-setup: the table the tests read."""

import os

import psycopg

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    conn.execute("CREATE TABLE greetings (text TEXT)")
    conn.execute("INSERT INTO greetings VALUES (%s)", (os.environ["GREETING"],))
print("test-setup: greetings table ready")
