"""One psql kept open on a database, for a statement run again and again (`App.reset()` between tests):
no process, connection or TLS handshake per statement, which cost 15–20 ms of a 20 ms reset here
(dynosim's runtime has no Postgres driver; psql is the client it has).

Each statement goes to psql's stdin followed by a marker line psql echoes back once it is done, with
whether it failed (psql's ERROR and LAST_ERROR_MESSAGE variables); what psql printed before the marker
is the statement's output. A psql that exits (its server restarted, a fault, a rotated password) is
started again once, with its `setup` (a temporary function, say), and the statement sent again.
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

from dynosim.errors import AddonError


class PsqlSession:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str], name: str, setup: str = "") -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.name = name
        self.setup = setup
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def run(self, statement: str, timeout: float = 60.0) -> str:
        """One statement's output (psql -A -t: a line a row); AddonError with the server's own words."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._proc is None:
                        self._proc = self._start()
                        if self.setup:
                            self._send(self._proc, self.setup, timeout)
                    return self._send(self._proc, statement, timeout)
                except _Gone:
                    self._stop()
                    if attempt == 2:
                        raise AddonError(
                            f"{self.name}: psql could not reach the server; is the add-on running?"
                        ) from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, bufsize=0
        )

    def _send(self, proc: subprocess.Popen[bytes], statement: str, timeout: float) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        marker = f"__dynosim_{secrets.token_hex(8)}__"
        script = f"{statement.rstrip()}\n\\if :ERROR\n\\echo {marker} failed :LAST_ERROR_MESSAGE\n\\else\n\\echo {marker} ok\n\\endif\n"
        try:
            proc.stdin.write(script.encode())
        except (BrokenPipeError, OSError):
            raise _Gone() from None
        out = b""
        deadline = time.monotonic() + timeout
        while marker.encode() not in out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                self._stop()
                raise AddonError(f"{self.name}: its server did not answer within {timeout:g} s")
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise _Gone()
            out += chunk
        text = out.decode(errors="replace")
        before, _, verdict = text.partition(marker)
        if verdict.startswith(" failed"):
            message = verdict[len(" failed") :].strip()
            if "connection" in message and ("lost" in message or "terminat" in message or "closed" in message):
                raise _Gone()
            raise AddonError(f"{self.name}: {message}")
        return before

    def _stop(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class _Gone(Exception):
    """The psql process (or its connection) is gone: start it again."""
