"""Issue 22's HTTP trial, one cycle of its corpus through a real `dynosim run`: every case answered as
Heroku's router answers it, no desync, the add-ons' ports and the control socket unhurt by garbage."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # trials/ lives at the repo root

from trials import http as http_trial


def test_one_cycle_of_the_corpus_passes() -> None:
    cases = len(http_trial.corpus())
    result = http_trial.run(count=cases, seed=1)
    assert not result.failures, "\n".join(failure.description for failure in result.failures)
    assert result.runs == cases + 3  # and the three wrong clients: Postgres, Redis, the control socket
