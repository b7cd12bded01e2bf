"""Render jobs without Ray: a cancelled job lets go of its input at once."""
from __future__ import annotations

import asyncio

import numpy as np

from actors.render import RenderJobs
from actors.turn_controller import StageHandles
from tests.unit.stage_fakes import FakeHandle

TIMEOUTS = {"asr": 2.0, "llm": 2.0, "tts": 2.0, "lipsync": 30.0}


async def test_a_job_cancelled_while_queued_frees_its_audio_at_once(tmp_path):
    started = asyncio.Event()

    async def render_forever(*_):  # the first job holds the worker
        started.set()
        await asyncio.Event().wait()

    stages = StageHandles(tts=None, lipsync=FakeHandle("render", render_forever, False), asr=None, llm=None)
    jobs = RenderJobs(stages, tmp_path / "renders", ttl_s=60, max_queued=4, chunk_frames=5, timeouts=TIMEOUTS)
    pcm = np.zeros(16000 * 10, np.int16)
    running = jobs.start("default", None, pcm=pcm, rate=16000)
    await asyncio.wait_for(started.wait(), 5)
    queued = jobs.start("default", None, pcm=pcm.copy(), rate=16000)
    assert jobs.status(queued["id"])["state"] == "queued"
    assert (await jobs.cancel(queued["id"]))["state"] == "cancelled"
    assert jobs._jobs[queued["id"]].pcm is None  # not kept until the record expires
    assert (await jobs.cancel(running["id"]))["state"] == "cancelled"
    assert jobs._jobs[running["id"]].pcm is None
    assert [s["state"] for s in (jobs.status(running["id"]), jobs.status(queued["id"]))] == ["cancelled"] * 2
