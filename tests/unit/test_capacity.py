"""Overload: admission by measured capacity, and audio kept on time while video gives way
(a late lip-sync chunk repeats the last frame, a late video track skips frames, a skipped
frame still ends its turn). Real clock and tracks, fake stage handles, no Ray."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from actors import deadline
from actors.capacity import LoadWindow, NodeCpu, SessionLoad, overload_reason
from actors.clock import AVUnit, ClockStats, MediaClock, Playout
from actors.speculation import Gate
from actors.transports.pacing import RECOVER_AFTER, SHED_AFTER_LATE, VideoShedder
from actors.transports.webrtc import AvatarAudioTrack, AvatarVideoTrack
from actors.turn import Turn
from serve_app.config import AdmissionSettings
from serve_app.engines.media import OUTPUT_PER_FRAME
from serve_app.engines.tts.base import AudioChunk
from tests.unit.stage_fakes import FakeHandle, FakeResponse

SETTINGS = AdmissionSettings(max_missed_frames=5, max_loop_lag_ms=150, min_free_cores=0.4)
CALM = SessionLoad(missed_frames=0, loop_lag_ms=3.0, rss_mb=120)


def idle(n: int) -> np.ndarray:
    return np.zeros((8, 8, 3), np.uint8)


# --- the admission rule ----------------------------------------------------------------
def test_calm_sessions_and_free_cpu_admit():
    assert overload_reason(SETTINGS, {"a": CALM, "b": CALM}, free_cores=1.2) is None


def test_missed_deadlines_refuse_with_the_reason():
    late = SessionLoad(12, 20.0, 120)
    reason = overload_reason(SETTINGS, {"a": CALM, "b": late}, free_cores=1.5)
    assert reason and "missing frame deadlines" in reason and "12 frames" in reason


def test_a_lagging_or_silent_session_refuses():
    lagging = SessionLoad(0, 400.0, 120)
    assert "falling behind" in overload_reason(SETTINGS, {"a": lagging}, free_cores=1.5)
    assert "did not report" in overload_reason(SETTINGS, {"a": None}, free_cores=1.5)


def test_too_little_free_cpu_refuses_counting_sessions_not_yet_measured():
    assert "0.30 CPU cores free" in overload_reason(SETTINGS, {"a": CALM}, free_cores=0.3)
    assert overload_reason(SETTINGS, {"a": CALM}, free_cores=0.9) is None
    # Two sessions just created have not shown their cost yet: each counts 0.4 cores.
    assert "0.10 CPU cores free" in overload_reason(SETTINGS, {"a": CALM}, free_cores=0.9, pending=2)


def test_the_first_session_is_let_in_however_busy_the_machine():
    assert overload_reason(SETTINGS, {}, free_cores=0.0) is None


def test_a_burst_is_counted_while_nothing_is_admitted_yet():
    """The first request of a burst is let in; the next ones see it pending (being created,
    not yet measured), so the CPU rule applies to them before any session exists."""
    assert overload_reason(SETTINGS, {}, free_cores=1.0, pending=0) is None
    assert overload_reason(SETTINGS, {}, free_cores=1.0, pending=1) is None  # 0.6 left of 1.0
    assert "CPU cores free" in overload_reason(SETTINGS, {}, free_cores=1.0, pending=2)


def test_load_window_counts_only_the_last_window():
    window, stats = LoadWindow(window_s=10), ClockStats()
    window.sample(stats, loop_lag_ms=2, now=0)
    stats.late_frames, stats.repeated_frames = 8, 2
    window.sample(stats, loop_lag_ms=300, now=5)
    assert window.summary().missed_frames == 10
    assert window.summary().loop_lag_ms == 300
    window.sample(stats, loop_lag_ms=1, now=16)  # the misses and the lag were > 10 s ago
    window.sample(stats, loop_lag_ms=1, now=17)
    summary = window.summary()
    assert summary.missed_frames == 0 and summary.loop_lag_ms == 1 and summary.rss_mb > 10


def test_node_cpu_sees_a_busy_core():
    cpu = NodeCpu(window_s=10)
    cpu.sample()
    spin_until = time.monotonic() + 0.5
    while time.monotonic() < spin_until:
        pass  # this test's own process keeps one core busy
    cpu.sample()
    free = cpu.free_cores(2)
    assert free is not None and 0 <= free <= 1.3


# --- the clock: what overload costs is counted, and turns still end ------------------------
def unit(playout: Playout, k: int, last: bool = False) -> AVUnit:
    return AVUnit(frame=np.full((8, 8, 3), k + 1, np.uint8), audio=np.full(OUTPUT_PER_FRAME, 1000, np.int16),
                  playout=playout, last=last)


async def test_a_turn_whose_last_frame_a_reader_skipped_still_ends():
    clock = MediaClock(idle, max_frames_ahead=10)
    playout = Playout("t")
    for k in range(4):
        await clock.put(unit(playout, k, last=k == 3))
    for index in range(5):
        clock.unit(index)  # the audio track takes every unit
    clock.video_sent(0, clock.unit(0))
    clock.video_sent(4, clock.unit(4))  # the video reader skipped ahead over 1..3
    assert playout.done.done() and playout.done.result() == "played"


async def test_silence_mid_reply_is_an_underrun_and_a_pause_between_turns_is_not():
    clock = MediaClock(idle, max_frames_ahead=10)
    playout = Playout("t")
    await clock.put(unit(playout, 0))
    clock.unit(0)
    clock.unit(1)  # its next unit was not there: silence mid-reply
    await clock.put(unit(playout, 1, last=True))
    clock.unit(2)
    clock.unit(3)  # the reply is over: idle is no underrun
    assert clock.stats.underrun_frames == 1
    clock.hold()  # the user may be talking: holding speech back is no underrun either
    await clock.put(unit(Playout("u"), 0))
    clock.unit(4)
    clock.unit(5)
    assert clock.stats.underrun_frames == 1


def test_video_sheds_every_other_frame_while_audio_is_late_and_recovers():
    shedder = VideoShedder()
    late = 0  # audio packets sent late so far
    for _ in range(SHED_AFTER_LATE):
        late += 1
        stride = shedder.stride(late)
    assert stride == 2
    for _ in range(RECOVER_AFTER):
        stride = shedder.stride(late)
    assert stride == 1


async def test_a_starved_loop_costs_video_frames_and_is_reported():
    clock = MediaClock(idle, max_frames_ahead=10)
    video = AvatarVideoTrack(clock)
    window = LoadWindow(window_s=10)
    window.sample(clock.stats, loop_lag_ms=0)
    await video.recv()
    time.sleep(0.4)  # the session's process had no CPU for 400 ms (10 frames)
    for _ in range(3):
        await video.recv()
    window.sample(clock.stats, loop_lag_ms=400)
    assert clock.stats.skipped_frames + clock.stats.late_frames >= 5
    load = window.summary()
    assert load.missed_frames >= 5
    assert overload_reason(SETTINGS, {"s": load}, free_cores=2.0) is not None


# --- a late lip-sync chunk: the voice keeps time over the last frame ----------------------
async def test_a_late_lipsync_chunk_repeats_the_last_frame_and_the_audio_never_stops():
    calls = []

    async def render(chunk):
        calls.append(chunk.first_frame)
        if len(calls) == 2:
            await asyncio.sleep(2.0)  # far past the 200 ms of speech queued ahead of it
        return [np.full((8, 8, 3), 100 + len(calls), np.uint8)] * len(chunk.visemes)

    async def audio():
        t = np.arange(24000 * 3 // 2) / 24000  # 1.5 s of a tone: 7 or 8 chunks of 5 frames
        yield AudioChunk((np.sin(2 * np.pi * 200 * t) * 8000 + 2000).astype(np.int16), 24000)

    clock = MediaClock(idle, max_frames_ahead=12)
    lipsync = FakeHandle("render", render, False)
    turn = Turn("t", audio(), avatar_id="a", lipsync=lipsync, media=clock, chunk_frames=5,
                gate=Gate(lambda e: None, opened=True), timeouts={"lipsync": 15})
    video, sound = AvatarVideoTrack(clock), AvatarAudioTrack(clock)
    packets: list[float] = []

    async def read_video():
        while not turn.playout.done.done():
            await video.recv()

    async def read_audio():
        while not turn.playout.done.done():
            frame = await sound.recv()
            packets.append(float(np.abs(frame.to_ndarray()).mean()))

    clock.start()
    turn.start()
    readers = asyncio.gather(read_video(), read_audio())
    assert await asyncio.wait_for(turn.playout.done, 10) == "played"
    await asyncio.wait_for(readers, 2)
    stats = clock.stats
    assert stats.repeated_frames == 5  # the late chunk's frames: the previous frame again
    assert stats.underrun_frames == 0 and stats.audio_skipped == 0
    spoken = [i for i, level in enumerate(packets) if level > 100]
    assert spoken and spoken == list(range(spoken[0], spoken[-1] + 1))  # no silent packet inside
    late_call = lipsync.responses_of("render")[1]
    assert isinstance(late_call, FakeResponse) and late_call.cancelled


async def test_a_call_past_its_due_time_is_given_up_and_cancelled():
    async def slow():
        await asyncio.sleep(5)

    response = FakeResponse(slow())
    assert await deadline.call("lipsync", response, timeout_s=15, due_s=0.05) is None
    assert response.cancelled
