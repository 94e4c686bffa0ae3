"""A finding: what `dynosim doctor` reports about an app, with where and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

ERROR = "error"  # would break on Heroku: doctor exits 1
WARNING = "warning"  # likely a problem on Heroku
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str  # stable, for scripts: "no-web", "uncommitted-import"…
    message: str
    fix: str
    file: str | None = None  # relative to the app folder
    line: int | None = None

    @property
    def where(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        return {key: data[key] for key in ("severity", "code", "file", "line", "message", "fix")}


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; the checks' own order within each."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def summary(findings: Sequence[Finding]) -> str:
    """`doctor: 2 errors, 1 warning` (and the info count when there is any)."""
    counts = {severity: sum(f.severity == severity for f in findings) for severity in SEVERITIES}
    parts = [_plural(counts[ERROR], "error"), _plural(counts[WARNING], "warning")]
    if counts[INFO]:
        parts.append(f"{counts[INFO]} info")
    return "doctor: " + ", ".join(parts)


def render(findings: Sequence[Finding]) -> str:
    """The readable list, grouped by severity."""
    lines: list[str] = []
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity == severity]
        if not group:
            continue
        title = {ERROR: "Errors (would break on Heroku)", WARNING: "Warnings", INFO: "Info"}[severity]
        lines.append(f"{title}:")
        for finding in group:
            where = f" {finding.where}" if finding.where else ""
            first, *rest = finding.message.splitlines() or [""]
            lines.append(f"  {severity}{where} [{finding.code}] {first}")
            lines.extend(f"      {more}" for more in rest)
            if finding.fix:
                lines.append(f"      fix: {finding.fix}")
        lines.append("")
    lines.append(summary(findings))
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
