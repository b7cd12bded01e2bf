"""ReplyAudio: chunks wait for the lip-sync engine's look-ahead, carry their context, and keep
the reply's audio aligned with its frames."""
import numpy as np
import pytest

from serve_app.engines.media import OUTPUT_PER_FRAME
from actors.reply_audio import ReplyAudio
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME


def tone(frames: int, start: int = 0) -> np.ndarray:
    """A 48 kHz ramp-modulated tone, so misplaced samples would show."""
    t = np.arange(start * OUTPUT_PER_FRAME, (start + frames) * OUTPUT_PER_FRAME) / 48_000
    return (0.5 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def test_without_lookahead_each_chunk_goes_out_at_once():
    reply = ReplyAudio()
    sent = []
    for k in range(4):
        reply.add(tone(5, 5 * k))
        ready = reply.ready()
        assert [c.first for c in ready] == [5 * k]  # not held back for the resampler's tail
        sent += ready
    reply.finish()
    assert reply.ready() == []
    assert [c.n for c in sent] == [5, 5, 5, 5]
    assert all(len(c.audio16) == 5 * SAMPLES_PER_FRAME for c in sent)


@pytest.mark.parametrize("context, lookahead", [(2, 5), (10, 3)])
def test_lookahead_holds_chunks_until_their_audio_arrives(context, lookahead):
    reply = ReplyAudio(context_frames=context, lookahead_frames=lookahead)
    whole = tone(23)
    got = []
    for start in range(0, 20, 5):
        reply.add(whole[start * OUTPUT_PER_FRAME : (start + 5) * OUTPUT_PER_FRAME])
        for c in reply.ready():
            # Released only once `lookahead` frames past its end have been added.
            assert start + 5 >= c.first + c.n + lookahead
            assert c.total is None and not c.last
            got.append(c)
    reply.add(whole[20 * OUTPUT_PER_FRAME :])
    reply.finish()
    tail = reply.ready()
    assert tail and tail[-1].last and tail[-1].total == 23 * SAMPLES_PER_FRAME
    got += tail
    assert [c.first for c in got] == [0, 5, 10, 15, 20]

    # Each segment is the reply's audio around the chunk, at the same reply positions.
    from serve_app.engines.audio import StreamResampler

    r = StreamResampler(48_000, 16_000)
    whole16 = np.concatenate([r.push(whole), r.flush()])
    for c in got:
        assert c.segment_offset == max(0, (c.first - context) * SAMPLES_PER_FRAME)
        end = c.segment_offset + len(c.segment)
        assert end >= min(23, c.first + c.n + lookahead) * SAMPLES_PER_FRAME - 16
        np.testing.assert_allclose(c.segment, whole16[c.segment_offset : end], atol=1e-4)
        assert np.array_equal(c.audio48, whole[c.first * OUTPUT_PER_FRAME : (c.first + c.n) * OUTPUT_PER_FRAME])


def test_memory_stays_bounded_over_a_long_reply():
    reply = ReplyAudio(context_frames=10, lookahead_frames=5)
    for k in range(200):  # 40 s of speech
        reply.add(tone(5, 5 * k))
        reply.ready()
    assert len(reply._audio16) <= (10 + 5 + 10) * SAMPLES_PER_FRAME
