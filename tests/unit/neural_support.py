"""Shared by the neural engine tests: a reply cut into chunks exactly as a session does it,
and the device they run on (`DH_TEST_DEVICE`, cpu by default; bench/gpu_check.sh sets cuda)."""
from __future__ import annotations

import os

import numpy as np

from serve_app.engines.media import OUTPUT_PER_FRAME
from actors.reply_audio import ReplyAudio, ReplyChunk
from serve_app.engines.lipsync.base import LipSyncChunk

TEST_DEVICE = os.environ.get("DH_TEST_DEVICE", "cpu")


def stream_reply(engine, audio48: np.ndarray, avatar_id: str, clock_frame: int = 0,
                 block: int = 5) -> tuple[list[ReplyChunk], list[LipSyncChunk]]:
    """ReplyAudio with the engine's context and look-ahead, fed `block` frames at a time, then
    finished; the chunks it released and the LipSync chunks a Turn would send for them."""
    reply = ReplyAudio(engine.context_frames, engine.lookahead_frames)
    parts = []
    frames = len(audio48) // OUTPUT_PER_FRAME
    for start in range(0, frames, block):
        reply.add(audio48[start * OUTPUT_PER_FRAME : (start + block) * OUTPUT_PER_FRAME])
        parts += reply.ready()
    reply.finish()
    parts += reply.ready()
    chunks = [LipSyncChunk(avatar_id, first_frame=clock_frame + p.first, audio=p.audio16, segment=p.segment,
                           segment_offset=p.segment_offset, reply_frame=p.first, reply_samples=p.total)
              for p in parts]
    return parts, chunks
