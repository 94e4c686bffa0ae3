"""`.dynosim/run.json`: one supervisor per app, what its one-off dynos need, and what a killed one left behind."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

from .app import AppDir
from .errors import DynosimError
from .privatefile import write_private
from .runtime.sandbox import process_identity, reap_marked, still_running, wipe_dir


class RunLock:
    def __init__(self, app: AppDir) -> None:
        self.app = app
        self.path = app.state_dir / "run.json"
        self.run_id = os.urandom(16).hex()

    def acquire(self, say: Callable[[str], None]) -> None:
        previous = self._read()
        if previous is not None:
            if _alive(previous):
                raise DynosimError(
                    f"another dynosim run (pid {previous['pid']}) is running {self.app.path}; stop it first"
                )
            reaped = reap_marked(str(previous.get("run_id", "")) + "/") if previous.get("run_id") else []
            if reaped:
                say(
                    f"dynosim: reaped {len(reaped)} process(es) left by a previous run that was killed "
                    f"(pids {', '.join(map(str, reaped))})"
                )
        wipe_dir(self.app.runtime_dir, self.app.runtime_dir.parent)
        record = {"pid": os.getpid(), "identity": process_identity(os.getpid()), "run_id": self.run_id}
        write_private(self.path, json.dumps(record))

    def record(self, **details: object) -> None:
        """Add what one-off dynos of this run need (its config vars: hence mode 0600)."""
        write_private(self.path, json.dumps({**(self._read() or {}), **details}))

    def active(self) -> dict[str, object] | None:
        """The record of the run going on in this app, if any."""
        record = self._read()
        return record if record is not None and _alive(record) else None

    def release(self) -> None:
        if (self._read() or {}).get("run_id") == self.run_id:
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _alive(record: Mapping[str, object]) -> bool:
    try:
        pid = int(record["pid"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return False
    return still_running(pid, record.get("identity"))
