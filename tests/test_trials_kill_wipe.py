"""Issue 22's kill and wipe trials, a case or two each, as `make trials-short` runs them: a Result of the
shape trials/run_all.py tabulates, and nothing found."""

from __future__ import annotations

from trials import kill, wipe
from trials.base import Result


def shaped(result: Result, trial: str) -> None:
    assert isinstance(result, Result) and result.runs > 0
    assert isinstance(result.figure, str) and isinstance(result.goal, str)
    for failure in result.failures:
        assert f"--only {trial} --seed" in failure.replay


def test_two_kills_leave_nothing_and_the_next_starts_come_up_clean() -> None:
    # seed 22's first two: SIGKILL during a restart (namespaces), SIGTERM during the add-ons' start (copy)
    result = kill.run(2, 22)
    shaped(result, "kill")
    assert result.failures == (), [f.description for f in result.failures]
    assert result.figure.startswith("0 left behind after 2 stops; 2 of 2 next starts clean")


def test_a_wipe_of_hostile_dyno_content_changes_nothing_outside_it() -> None:
    result = wipe.run(1, 22)  # namespaces, wiped by the stop
    shaped(result, "wipe")
    assert result.figure.startswith("0 files changed outside the dyno in 1 wipes; 0 wipes failed")
    assert result.failures == (), [f.description for f in result.failures]
