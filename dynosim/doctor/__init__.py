"""`dynosim doctor`: what would break on Heroku, found before the push, each with its fix.

Static checks read the app's files (checks.py, uncommitted.py, binding.py); one check runs
web.1 briefly, because whether it listens on 0.0.0.0:$PORT can only be seen running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import binding, checks, pools, schedulers, staticfiles, uncommitted
from .findings import ERROR, INFO, WARNING, Finding, ordered, render, summary
from .source import AppSource, read_app

STATIC_CHECKS: tuple[Callable[[AppSource], list[Finding]], ...] = (
    checks.procfile,  # 1
    checks.procfile_lines,  # 2
    uncommitted.uncommitted,  # 3
    checks.database_url,  # 5
    checks.sqlite_fallback,  # 6
    checks.uploads,
    checks.migrations,  # 7
    checks.dependency_file,  # 8
    checks.runtime_txt,
    checks.ssl_redirect,
    staticfiles.staticfiles,
    schedulers.schedulers,
    pools.pools,
)
DEFAULT_BOOT_TIMEOUT = 15.0
BUILD_BREAKERS = frozenset({"no-dependency-file", "several-dependency-files", "collectstatic-fails"})


def diagnose(
    app_dir: Path,
    *,
    run: bool = True,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    say: Callable[[str], None] = lambda _: None,
) -> list[Finding]:
    """Every finding about the app in `app_dir`, errors first; `say` hears about the slow part."""
    src = read_app(app_dir)
    findings: list[Finding] = []
    for check in STATIC_CHECKS:
        findings.extend(check(src))
    hints = binding.static_hints(src)  # 4
    if run and src.procfile is not None and "web" in src.procfile.processes:
        say("doctor: running web.1 briefly to see where it listens (skip with --no-run)…")
        hints = binding.merge(hints, binding.trial_run(src, boot_timeout), boot_timeout)
        if any(f.code in BUILD_BREAKERS for f in findings):  # already said, with its own fix
            hints = [f for f in hints if f.code != "build-failed"]
    findings.extend(hints)
    return ordered(findings)


__all__ = ["ERROR", "INFO", "WARNING", "Finding", "diagnose", "render", "summary"]
