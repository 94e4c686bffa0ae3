"""Issue 22's trials runner, for real: the short fuzz and security trials as `make trials-short` runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_the_short_fuzz_and_security_trials_write_their_rows_and_find_nothing(tmp_path: Path) -> None:
    output = tmp_path / "trials.json"
    done = subprocess.run(
        [
            sys.executable,
            "trials/run_all.py",
            "--short",
            "--only",
            "fuzz,security",
            "--seed",
            "22",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = json.loads(output.read_text())
    assert [row["trial"] for row in rows] == ["fuzz", "security"], done.stderr
    for row in rows:
        assert set(row) == {"trial", "runs", "failures", "figure", "goal"}
        assert isinstance(row["runs"], int) and row["runs"] > 0
        assert isinstance(row["figure"], str) and isinstance(row["goal"], str)
    failures = {row["trial"]: row["failures"] for row in rows}
    assert failures == {"fuzz": 0, "security": 0}, done.stderr[-4000:]
    assert done.returncode == 0
    assert "dynosim reliability trials" in done.stdout


def test_an_unknown_trial_is_refused_naming_the_ones_there_are(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "trials/run_all.py", "--only", "nosuch", "--output", str(tmp_path / "t.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "no trial named nosuch; choose from kill, data-loss, wipe, fuzz, http, security" in done.stderr
    assert not (tmp_path / "t.json").exists()
