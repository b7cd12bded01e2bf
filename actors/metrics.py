"""Session metrics, exported through Ray's metrics agent (Ray dashboard / Prometheus).

Counters are fed from the clock's stats once a second rather than per frame, so the media
path pays nothing for them.
"""
from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_MS = [25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000]


@cache
def sessions_gauge() -> Gauge:
    return Gauge("digital_human_sessions", "Sessions by state (active, warm).", tag_keys=("state",))


@cache
def frames_counter() -> Counter:
    return Counter(
        "digital_human_video_frames",
        "Frames by kind: sent, speech, late (past their deadline), skipped (never sent), repeated "
        "(lip-sync late: the previous frame again), audio_late and audio_skipped (20 ms packets), underrun "
        "(silence mid-reply).",
        tag_keys=("kind",),
    )


@cache
def speculative_replies() -> Counter:
    return Counter(
        "digital_human_speculative_replies",
        "Replies started in a pause (started) and those the VAD then confirmed (confirmed); "
        "the difference is work spent on pauses the user talked on through.",
        tag_keys=("outcome",),
    )


@cache
def turn_latency() -> Histogram:
    return Histogram(
        "digital_human_turn_latency_ms",
        "Per-turn latency marks in ms since the request (tts_first_audio, first_frame_sent).",
        boundaries=LATENCY_BOUNDARIES_MS,
        tag_keys=("mark",),
    )


class FrameCounters:
    """Turns the clock's running totals into counter increments."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def update(self, totals: dict[str, int]) -> None:
        for kind, total in totals.items():
            delta = total - self._last.get(kind, 0)
            if delta > 0:
                frames_counter().inc(delta, tags={"kind": kind})
            self._last[kind] = total


def record_marks(marks: dict[str, float]) -> None:
    for mark, ms in marks.items():
        if mark != "request":
            turn_latency().observe(ms, tags={"mark": mark})
