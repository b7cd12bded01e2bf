"""The A/V clock: pairing by construction, bounded production, barge-in flush (no Ray)."""
from __future__ import annotations

import asyncio

import numpy as np

from actors.clock import AVUnit, MediaClock, Playout
from actors.transports.webrtc import OUTPUT_PER_PACKET, AvatarAudioTrack, AvatarVideoTrack
from serve_app.engines.media import OUTPUT_PER_FRAME

_playouts: dict[str, Playout] = {}


def idle(n: int) -> np.ndarray:
    return np.full((8, 8, 3), 0, dtype=np.uint8)


def speech_unit(k: int, turn: str = "t1", last: bool = False) -> AVUnit:
    # Frame value and audio value both encode k, so pairing can be checked on the output.
    playout = _playouts.get(turn)
    if playout is None or playout.done.get_loop() is not asyncio.get_running_loop():
        playout = _playouts[turn] = Playout(turn)
    return AVUnit(
        frame=np.full((8, 8, 3), k + 1, dtype=np.uint8),
        audio=np.full(OUTPUT_PER_FRAME, (k + 1) * 100, dtype=np.int16),
        playout=playout,
        last=last,
    )


async def test_each_video_frame_carries_exactly_its_two_audio_packets():
    clock = MediaClock(idle, max_frames_ahead=20)
    for k in range(6):
        await clock.put(speech_unit(k))
    video, audio = AvatarVideoTrack(clock), AvatarAudioTrack(clock)

    async def take(track, n):
        return [await track.recv() for _ in range(n)]

    frames, packets = await asyncio.gather(take(video, 8), take(audio, 16))
    for n, frame in enumerate(frames):
        value = int(frame.to_ndarray(format="rgb24")[0, 0, 0])
        for packet in packets[2 * n : 2 * n + 2]:
            pcm = packet.to_ndarray()
            assert pcm.shape[-1] == OUTPUT_PER_PACKET
            assert int(pcm.flat[0]) == value * 100  # idle frames (0) pair with silence (0)
        assert frame.pts == n * 3600
    assert [int(f.to_ndarray(format="rgb24")[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 5, 6, 0, 0]
    assert [p.pts for p in packets] == [m * OUTPUT_PER_PACKET for m in range(16)]


async def test_producer_blocks_when_queue_is_full():
    clock = MediaClock(idle, max_frames_ahead=3)
    for k in range(3):
        await clock.put(speech_unit(k))
    blocked = asyncio.ensure_future(clock.put(speech_unit(3)))
    await asyncio.sleep(0)  # let it run up to its wait
    assert not blocked.done() and clock.queued() == 3
    clock.unit(0)  # the clock consumes one unit -> space for the producer
    await asyncio.wait_for(blocked, 1)
    assert clock.queued() == 3


async def test_flush_drops_queued_and_assigned_speech():
    clock = MediaClock(idle, max_frames_ahead=10)
    for k in range(5):
        await clock.put(speech_unit(k))
    assert clock.unit(0).turn_id == "t1"  # assigned to frame 0, audio not sent yet
    assert clock.flush() == 5
    assert clock.queued() == 0
    assert clock.unit(0).turn_id is None  # the unsent remainder of frame 0 is idle now
    assert clock.unit(1).turn_id is None


async def test_a_turns_playout_learns_what_was_shown_and_ends_at_its_last_frame():
    firsts = []
    playout = Playout("t1", on_first_frame=lambda: firsts.append(clock.stats.video_frames))
    clock = MediaClock(idle, max_frames_ahead=10)
    await clock.put(AVUnit(frame=idle(0), playout=playout))
    await clock.put(AVUnit(frame=idle(1), playout=playout, last=True))
    video = AvatarVideoTrack(clock)
    await video.recv()
    assert firsts == [1] and playout.frames_shown == 1 and not playout.done.done()
    await video.recv()
    assert playout.done.result() == "played"
    await video.recv()  # idle
    assert playout.frames_shown == 2 and clock.stats.speech_frames == 2 and firsts == [1]


async def test_a_cut_playout_ignores_stragglers():
    playout = Playout("t1")
    playout.finish("interrupted")
    playout.shown(last=True)
    assert playout.done.result() == "interrupted" and playout.frames_shown == 0


async def test_hold_pauses_speech_and_resume_continues_where_it_stopped():
    clock = MediaClock(idle, max_frames_ahead=10)
    for k in range(4):
        await clock.put(speech_unit(k))
    clock.video_sent(0, clock.unit(0))  # speech 0 is on screen
    clock.unit(1)  # speech 1 assigned to frame 1, not sent yet
    clock.hold()  # the user may be starting to talk
    assert clock.unit(1).turn_id is None and clock.unit(2).turn_id is None  # idle at once
    clock.resume()  # it was a cough: speech 1 continues, nothing lost
    assert [clock.unit(i).frame[0, 0, 0] for i in (3, 4, 5)] == [2, 3, 4]


async def test_flush_after_hold_drops_the_held_speech():
    clock = MediaClock(idle, max_frames_ahead=10)
    for k in range(3):
        await clock.put(speech_unit(k))
    clock.hold()
    clock.flush()  # confirmed barge-in
    assert clock.queued() == 0 and clock.unit(0).turn_id is None
    await clock.put(speech_unit(9, turn="t2"))  # the next turn plays normally
    assert clock.unit(1).turn_id == "t2"
