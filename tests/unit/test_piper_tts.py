from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve_app.engines.tts import Voice, VoiceStyle, create_tts_engine  # noqa: E402
from serve_app.engines.tts.piper_tts import PiperTTS  # noqa: E402

LONG_TEXT = " ".join(f"This is sentence number {i} of a rather long paragraph." for i in range(20))


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS()


def _piper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "piper-tts"]


async def _collect(gen):
    return [c async for c in gen]


@pytest.mark.asyncio
async def test_streams_one_chunk_per_sentence_with_timings(tts):
    chunks = await _collect(tts.stream("Hello there. How are you today?"))
    assert len(chunks) >= 2
    assert [c.text for c in chunks] == ["Hello there.", "How are you today?"]
    for c in chunks:
        assert c.samples.dtype == np.int16 and c.samples.ndim == 1
        assert c.sample_rate == 22050 == tts.sample_rate
        assert c.phonemes and sum(p.num_samples for p in c.phonemes) == len(c.samples)
        rms_db = 20 * np.log10(np.sqrt(np.mean((c.samples / 32768.0) ** 2)) + 1e-12)
        assert rms_db > -35  # speech, not silence (silence is below -60)
        assert 0.3 < c.duration_s < 4


@pytest.mark.asyncio
async def test_one_thread_voice_speaks_with_timings():
    tts = PiperTTS(threads=1)
    assert tts._voice.session.get_session_options().intra_op_num_threads == 1
    [chunk] = await _collect(tts.stream("One thread is enough."))
    assert chunk.phonemes and sum(p.num_samples for p in chunk.phonemes) == len(chunk.samples)
    assert np.abs(chunk.samples).max() > 3000  # speech


@pytest.mark.asyncio
async def test_aclose_stops_synthesis_promptly_and_engine_still_works(tts):
    gen = tts.stream(LONG_TEXT)  # about 6 s of synthesis on 2 cores if left running
    first = await gen.__anext__()
    assert len(first.samples) > 0
    started = time.perf_counter()
    await gen.aclose()
    assert time.perf_counter() - started < 0.1  # no waiting for the sentence in progress
    while _piper_threads() and time.perf_counter() - started < 2.0:
        await asyncio.sleep(0.01)
    assert not _piper_threads(), "synthesis thread kept running after aclose()"

    chunks = await _collect(tts.stream("Still here."))
    assert len(chunks) == 1 and len(chunks[0].samples) > 0


@pytest.mark.asyncio
async def test_cancelling_the_consumer_stops_the_thread(tts):
    got_one = asyncio.Event()

    async def consume():
        async for _ in tts.stream(LONG_TEXT):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    while _piper_threads() and time.perf_counter() - started < 2.0:
        await asyncio.sleep(0.01)
    assert not _piper_threads()


@pytest.mark.asyncio
async def test_event_loop_stays_responsive_while_synthesizing(tts):
    gaps = []
    stop = False

    async def ticker():
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await _collect(tts.stream("A sentence long enough to take a while to synthesize on a CPU."))
    took = time.perf_counter() - started
    stop = True
    await tick
    # Synthesis blocking the loop would show as one gap as long as the synthesis itself;
    # relative to it, so a slow (loaded) machine doesn't fail a working engine.
    assert len(gaps) >= 3 and max(gaps) < 0.5 * took, (max(gaps), took)


@pytest.mark.asyncio
@pytest.mark.parametrize("text", ["", "   \n\t"])
async def test_empty_text_yields_nothing(tts, text):
    assert await _collect(tts.stream(text)) == []


@pytest.mark.asyncio
async def test_voices_and_unknown_voice(tts):
    assert tts.voices() == [Voice("joe", "en-US")]
    assert len(await _collect(tts.stream("Hi.", voice="joe"))) == 1
    with pytest.raises(ValueError, match="nobody"):
        await _collect(tts.stream("Hi.", voice="nobody"))


@pytest.mark.asyncio
async def test_a_characters_style_sets_rate_and_volume(tts):
    text = "This sentence is said at three speeds."
    plain, fast, quiet = [
        np.concatenate([c.samples for c in await _collect(tts.stream(text, style=style))])
        for style in (VoiceStyle(), VoiceStyle(rate=1.5), VoiceStyle(volume=0.5))
    ]
    assert len(fast) < 0.8 * len(plain)
    peak = lambda x: np.abs(x.astype(np.int32)).max()  # noqa: E731
    assert peak(quiet) < 0.6 * peak(plain)


def test_missing_model_names_the_path(tmp_path):
    missing = tmp_path / "no-such-voice.onnx"
    with pytest.raises(FileNotFoundError, match="no-such-voice.onnx") as err:
        PiperTTS(model=str(missing))
    assert "download_voices" in str(err.value)


def test_registry(tmp_path):
    with pytest.raises(ValueError, match="piper"):
        create_tts_engine("nope")
    with pytest.raises(FileNotFoundError, match="absent.onnx"):  # options reach PiperTTS
        create_tts_engine("piper", model=str(tmp_path / "absent.onnx"))


@pytest.mark.asyncio
async def test_a_flood_of_cancelled_streams_never_piles_up_threads():
    """A `say` flood: each request's stream is cancelled by the next. At most `concurrency`
    synthesis threads are ever alive; streams cancelled while waiting never start one."""
    tts = PiperTTS(concurrency=2)
    most = 0
    sampling = True

    async def sample():
        nonlocal most
        while sampling:
            most = max(most, len(_piper_threads()))
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    tasks = []
    for _ in range(20):
        if tasks:
            tasks[-1].cancel()
        tasks.append(asyncio.create_task(_collect(tts.stream(LONG_TEXT))))
        await asyncio.sleep(0.01)
    tasks[-1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    started = time.perf_counter()
    while _piper_threads() and time.perf_counter() - started < 10:
        await asyncio.sleep(0.01)
    sampling = False
    await sampler
    assert 1 <= most <= 2, most
    assert not _piper_threads()
    chunks = await _collect(tts.stream("Still speaking."))  # every slot came back
    assert len(chunks) == 1


def test_device_cuda_without_the_cuda_provider_says_how_to_get_it():
    import onnxruntime

    from serve_app.engines.tts.piper_tts import _providers

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert _providers("cuda")[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            _providers("cuda")
        assert _providers("auto") == ["CPUExecutionProvider"]
    assert _providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="cpu, cuda or auto"):
        _providers("tpu")
