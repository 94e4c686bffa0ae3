"""`dynosim metrics`: the running app's metrics, as Heroku Metrics shows them, in the terminal: memory
per dyno against its quota, response time, requests by status class, and the events, over a window."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table
from ..metrics import STATUS_CLASSES, to_csv


@click.command("metrics")
@app_dir_option
@click.option("--window", default="1m", show_default=True, help="How far back: 90s, 5m, 1h (an hour is kept).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="One row per second, as CSV.")
@operate
def metrics(app_dir: Path, window: str, as_json: bool, as_csv: bool) -> None:
    """The running app's 1-second metrics: memory, response time, throughput and events."""
    from .. import api
    from ..faults import parse_duration

    seconds = parse_duration(window, "--window")
    app_state(app_dir)
    series = api.metrics(app_dir, window=seconds)
    points: list[dict[str, Any]] = series["points"]
    if as_json:
        print_json(series)
    elif as_csv:
        sys.stdout.write(to_csv(points))
    else:
        _tables(points, window)


def _tables(points: list[dict[str, Any]], window: str) -> None:
    click.echo(f"=== Memory (last {window})")
    memory: dict[str, list[dict[str, float]]] = {}
    for point in points:
        for name, sample in point["memory"].items():
            memory.setdefault(name, []).append(sample)
    rows = [
        [
            name,
            f"{samples[-1]['rss_mb'] + samples[-1]['swap_mb']:.1f} MB",
            f"{max(s['rss_mb'] + s['swap_mb'] for s in samples):.1f} MB",
            f"{samples[-1]['swap_mb']:.1f} MB",
            f"{samples[-1]['quota_mb']:.0f} MB",
            f"{100 * max(s['rss_mb'] + s['swap_mb'] for s in samples) / samples[-1]['quota_mb']:.0f}%",
        ]
        for name, samples in sorted(memory.items())
    ]
    print_table(["Dyno", "Now", "Max", "Swap", "Quota", "Max/quota"], rows or [["(no dyno up)", "", "", "", "", ""]])
    click.echo()
    click.echo(f"=== Router (last {window})")
    answered = [point for point in points if point["response_ms"]]
    totals = [sum(point["requests"][c] for point in points) for c in STATUS_CLASSES]

    def worst(key: str) -> str:
        return f"{max(p['response_ms'][key] for p in answered):.0f} ms" if answered else "-"

    median = f"{statistics.median(p['response_ms']['p50'] for p in answered):.0f} ms" if answered else "-"
    print_table(
        ["Requests", *STATUS_CLASSES, "p50", "p95 (worst second)", "p99 (worst second)"],
        [[str(sum(totals)), *(str(t) for t in totals), median, worst("p95"), worst("p99")]],
    )
    events = [(point["time"], event) for point in points for event in point["events"]]
    if events:
        click.echo()
        click.echo(f"=== Events (last {window})")
        print_table(
            ["Time", "Kind", "Dyno", "Line"],
            [[time.strftime("%H:%M:%S", time.localtime(t)), e["kind"], e["dyno"], e["text"]] for t, e in events],
        )
