"""The suite scripts.test runs: not named test_*.py, so dynosim's own test run does not collect it."""

import os

import psycopg


def test_greeting_from_setup() -> None:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT text FROM greetings").fetchone()
    assert row == ("hello from app.json",)


def test_ci_vars() -> None:
    print(
        "CI vars:",
        {name: os.environ.get(name) for name in sorted(os.environ) if name.startswith(("CI", "HEROKU_TEST"))},
    )
    # CI_APP_FAIL makes this suite fail, for the failing run
    assert os.environ.get("CI_APP_FAIL") != "1"
