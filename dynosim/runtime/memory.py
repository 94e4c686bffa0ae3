"""Memory: each dyno's whole process tree sampled with psutil, on Heroku's interval, with Heroku's
quota lines: R14 past the dyno size's quota (the dyno goes on), R15 past its hard limit (killed)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..formation import DynoSize
from ..logs import LogStream
from .sandbox import DynoProcess, Sandbox

if TYPE_CHECKING:  # psutil is imported where it is used: a run's first dyno starts without it
    import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryPolicy:
    interval: float = 20.0  # log-runtime-metrics samples about every 20 s
    runtime_metrics: bool = False  # print Heroku's sample#memory_… lines
    quota_scale: float = 1.0  # shrink the quotas, for tests and demonstrations


class Quota:
    """A dyno's memory quota as the monitor holds it to: its size's, or lower for a while (the
    memory-pressure fault, which drives a dyno to R14 and R15 without touching the app). A change is
    looked at at once, not at the next sample, so the fault shows when it starts."""

    def __init__(self, mb: float) -> None:
        self.size_mb = mb
        self.mb = mb
        self.changed = asyncio.Event()

    def lower(self, mb: float) -> None:
        self.mb = mb
        self.changed.set()

    def restore(self) -> None:
        self.lower(self.size_mb)


class Dyno(Protocol):
    """The dyno whose memory is watched (dyno.Dyno): its processes, where it logs, and its last sample."""

    logs: LogStream
    marker: str
    process: DynoProcess | None
    sandbox: Sandbox
    memory_mb: float | None
    quota: Quota

    @property
    def name(self) -> str: ...

    def kill(self) -> None: ...


def sample(dyno: Dyno) -> tuple[float, float]:
    """(rss, swap) in MB of every process of the dyno, leaving out dynosim's own init."""
    return usage(processes(dyno))


def processes(dyno: Dyno) -> list[psutil.Process]:
    """The dyno's processes but dynosim's own init: the costly half of a sample (a scan of /proc), which
    the metrics' once-a-second samples make only now and then."""
    assert dyno.process is not None
    own = {dyno.process.pid}
    if dyno.sandbox.mode == "namespaces":
        own.update(p.pid for p in _children(dyno.process.pid))
    return [process for process in dyno.process.processes() if process.pid not in own]


def usage(processes: list[psutil.Process]) -> tuple[float, float]:
    """(rss, swap) in MB of these processes, those gone since left out."""
    import psutil

    rss = swap = 0
    for process in processes:
        try:
            rss += process.memory_info().rss
            swap += _swap(process.pid)
        except (psutil.Error, OSError):
            continue
    return rss / MB, swap / MB


def _children(pid: int) -> list[psutil.Process]:
    import psutil

    try:
        return psutil.Process(pid).children()
    except psutil.Error:
        return []


def _swap(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSwap:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def watch(dyno: Dyno, size: DynoSize, policy: MemoryPolicy) -> None:
    logs, name = dyno.logs, dyno.name
    while True:
        try:
            await asyncio.wait_for(dyno.quota.changed.wait(), policy.interval)
        except TimeoutError:
            pass
        dyno.quota.changed.clear()
        quota = dyno.quota.mb
        rss, swap = await asyncio.to_thread(sample, dyno)
        total = rss + swap
        dyno.memory_mb = total
        if policy.runtime_metrics:
            load1, load5, load15 = os.getloadavg()
            logs.heroku(
                name,
                f"source={name} dyno=heroku.dynosim.{dyno.marker} sample#load_avg_1m={load1:.2f} "
                f"sample#load_avg_5m={load5:.2f} sample#load_avg_15m={load15:.2f}",
            )
            logs.heroku(
                name,
                f"source={name} dyno=heroku.dynosim.{dyno.marker} sample#memory_total={total:.2f}MB "
                f"sample#memory_rss={rss:.2f}MB sample#memory_cache=0.00MB sample#memory_swap={swap:.2f}MB "
                f"sample#memory_pgpgin=0pages sample#memory_pgpgout=0pages sample#memory_quota={quota:.2f}MB",
            )
        if total <= quota:
            continue
        logs.heroku(name, f"Process running mem={total:.0f}M({100 * total / quota:.1f}%)")
        if total > quota * size.kill_factor:
            logs.heroku(name, "Error R15 (Memory quota vastly exceeded)")
            logs.heroku(name, "Stopping process with SIGKILL")
            dyno.kill()
            return
        logs.heroku(name, "Error R14 (Memory quota exceeded)")
