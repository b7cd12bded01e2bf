"""Admission by measured capacity: a new session is refused (503 + Retry-After) while the
sessions already admitted miss their frame deadlines, or while the node has less idle CPU
than one more talking session needs. A fixed cap (`sessions.max_sessions`) still bounds it.

Each session actor keeps a `LoadWindow` of its own clock (late, skipped and repeated video
frames, skipped audio packets, how late its event loop wakes up); the session pool polls
every actor's summary in the background and keeps the verdict, so creating a session and
`GET /api/health` read a cached answer and never call the actors themselves.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from actors.clock import ClockStats
from serve_app.config import AdmissionSettings


@dataclass(frozen=True)
class SessionLoad:
    """What one session actor saw over the last window."""

    missed_frames: int  # late, skipped or repeated video frames, skipped audio packets
    loop_lag_ms: float  # the most the actor's event loop woke up late
    rss_mb: float  # the actor process's resident memory


class LoadWindow:
    """Per-second samples of a session's clock counters over `window_s`."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int, float]] = deque()  # (t, missed, lag)

    def sample(self, stats: ClockStats, loop_lag_ms: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, stats.missed(), loop_lag_ms))
        while self._samples and self._samples[0][0] < now - self._window_s:
            self._samples.popleft()

    def summary(self) -> SessionLoad:
        if not self._samples:
            return SessionLoad(0, 0.0, rss_mb())
        first, last = self._samples[0], self._samples[-1]
        return SessionLoad(missed_frames=last[1] - first[1], loop_lag_ms=round(max(s[2] for s in self._samples), 1),
                           rss_mb=rss_mb())


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def cpu_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies over all cores since boot, from /proc/stat. Busy is all
    but idle and iowait, so it includes steal: time the hypervisor gave to someone else is
    not ours to use either."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - fields[3] - fields[4], fields[7], total


class NodeCpu:
    """Idle cores of this machine over the last window (the session pool's node: on one
    machine, where the sessions run). None where /proc/stat cannot be read."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()  # (t, busy, total)

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        try:
            busy, _, total = cpu_ticks()
        except (OSError, ValueError, IndexError):
            return
        self._samples.append((now, busy, total))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()

    def free_cores(self, cores: int) -> float | None:
        if len(self._samples) < 2:
            return None
        (_, busy0, total0), (_, busy1, total1) = self._samples[0], self._samples[-1]
        if total1 <= total0:
            return None
        return round(cores * (1 - (busy1 - busy0) / (total1 - total0)), 2)


def overload_reason(settings: AdmissionSettings, loads: dict[str, SessionLoad | None],
                    free_cores: float | None, pending: int = 0) -> str | None:
    """Why a new session would be refused now (None: admit). `loads` maps each admitted
    session to its last summary, None for one that did not answer in time; `pending`
    sessions (being created, or younger than the window) do not show in the measured CPU
    yet, so each is counted as taking `min_free_cores` of it."""
    for load in loads.values():
        if load is None:
            return "a session did not report its load in time"
        if load.missed_frames > settings.max_missed_frames:
            return f"sessions are missing frame deadlines ({load.missed_frames} frames in {settings.window_s:g} s)"
        if load.loop_lag_ms > settings.max_loop_lag_ms:
            return f"a session's process is falling behind ({load.loop_lag_ms:.0f} ms late)"
    # With no session admitted or pending there is nothing of ours to protect: the first one
    # is let in. Pending ones count, so a burst of requests is admitted one by one.
    if (loads or pending) and free_cores is not None:
        free = free_cores - pending * settings.min_free_cores
        if free < settings.min_free_cores:
            return f"{max(free, 0):.2f} CPU cores free, a session needs {settings.min_free_cores:g}"
    return None
