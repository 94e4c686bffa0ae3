"""dynosim's reliability trials (issue 22): repeatable, seeded runs that count failures and print a figure.

Each trial is one module here of the same shape: a docstring saying what it tries and what counts as a
failure, and `run(count: int, seed: int) -> trials.base.Result`, which runs `count` cases (or rounds)
drawn from `seed` alone, bounded in time, on loopback only, and returns how many ran, each failure with
the command that replays it, the figure and its goal. `trials/run_all.py` runs them (`make trials`, or
`make trials-short` for CI), prints one table and writes trials.json at the repo root.

Adding a trial: one module here with that `run`, and one line in run_all.py's TRIALS table (its name as
trials.json names it, and its short and long counts).
"""
