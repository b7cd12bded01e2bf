"""MP4 renders: a job with progress -> H.264 + AAC at 25 fps whose mouth follows its voice;
the command-line client; bad inputs refused with nothing left behind."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from skimage import data as skdata

from serve_app.config import PROJECT_ROOT
from serve_app.engines.lipsync.sprite import SpriteAvatar
from tests.integration.support import png

pytestmark = pytest.mark.integration

STATES = ["queued", "synthesising", "rendering", "encoding", "done"]
QUESTION = PROJECT_ROOT / "tests" / "fixtures" / "weather_question.wav"


async def finish(http, job: dict) -> tuple[dict, list[str]]:
    """Poll the job to its end; returns it and the states seen, in order."""
    seen = [job["state"]]

    async def poll() -> dict:
        current = job
        while current["state"] not in ("done", "failed", "cancelled"):
            await asyncio.sleep(0.1)  # polling the job's progress, not timing the test
            current = (await http.get(job["status_url"])).json()
            if current["state"] != seen[-1]:
                seen.append(current["state"])
        return current

    return await asyncio.wait_for(poll(), 120), seen


def probe(path: Path) -> dict:
    """What ffprobe would say (PyAV is the same libav), plus per-frame mouth darkness and
    per-frame audio energy."""
    avatar = SpriteAvatar(PROJECT_ROOT / "avatars" / "default")
    xs0, ys0, xs1, ys1 = zip(*(avatar.mouth_box(i) for i in range(0, 250, 5)))
    x0, y0, x1, y1 = min(xs0), min(ys0), max(xs1), max(ys1)
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = {"video_codec": video.codec_context.name, "audio_codec": audio.codec_context.name,
                "fps": float(video.average_rate), "video_s": float(video.duration * video.time_base),
                "audio_s": float(audio.duration * audio.time_base), "audio_rate": audio.rate}
        dark = []
        for frame in container.decode(video=0):
            luma = frame.to_ndarray(format="gray")[y0:y1, x0:x1]
            dark.append(int((luma < 90).sum()))
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                              for f in resampler.resample(frame)]).astype(np.float32)
    n = min(len(dark), len(pcm) // 1920)
    energy = np.sqrt(np.mean(pcm[: n * 1920].reshape(n, 1920) ** 2, axis=1))
    return {**info, "dark": np.array(dark[:n], float), "energy": energy}


def best_lag(mouth: np.ndarray, energy: np.ndarray, max_lag: int = 4) -> int:
    """The shift of the mouth against the voice (frames) that correlates best."""
    def corr(lag: int) -> float:
        a, b = (mouth[lag:], energy[: len(energy) - lag]) if lag >= 0 else (mouth[:lag], energy[-lag:])
        return float(np.corrcoef(a, b)[0, 1])
    return max(range(-max_lag, max_lag + 1), key=corr)


async def test_a_text_render_is_an_mp4_whose_mouth_follows_its_voice(http, tmp_path):
    text = "Hello and welcome. Today we open our mouths wide, and then we close them again."
    started = await http.post("/api/renders", json={"avatar": "default", "text": text})
    assert started.status_code == 202, started.text
    job, seen = await finish(http, started.json())
    assert job["state"] == "done", job
    assert seen == [s for s in STATES if s in seen] and seen[-1] == "done"  # in order, as polled
    assert [state for state, _ in job["history"]] == STATES and job["percent"] == 100  # every stage
    times = [t for _, t in job["history"]]
    assert times == sorted(times)
    download = await http.get(job["download_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    path = tmp_path / "render.mp4"
    path.write_bytes(download.content)
    assert len(download.content) == job["bytes"]
    info = await asyncio.to_thread(probe, path)
    assert (info["video_codec"], info["audio_codec"], info["fps"], info["audio_rate"]) == ("h264", "aac", 25.0, 48000)
    assert abs(info["video_s"] - job["duration_s"]) < 0.2 and abs(info["audio_s"] - info["video_s"]) < 0.1
    loud = info["energy"] > 0.1 * info["energy"].max()
    assert loud.sum() > 25 and info["dark"][loud].mean() > 2 * info["dark"][~loud].mean()  # it talks
    assert abs(best_lag(info["dark"], info["energy"])) <= 1  # mouth and voice within 40 ms


async def test_an_uploaded_audio_renders_at_its_length_and_the_file_is_removable(http, tmp_path):
    started = await http.post("/api/renders", data={"avatar": "default"},
                              files={"audio": ("q.wav", QUESTION.read_bytes(), "audio/wav")})
    assert started.status_code == 202, started.text
    job, seen = await finish(http, started.json())
    assert job["state"] == "done" and [s for s, _ in job["history"]] == ["queued", "rendering", "encoding", "done"]
    assert abs(job["duration_s"] - 1.64) < 0.05
    path = tmp_path / "q.mp4"
    path.write_bytes((await http.get(job["download_url"])).content)
    info = await asyncio.to_thread(probe, path)
    assert abs(info["video_s"] - 1.64) < 0.1
    assert abs(best_lag(info["dark"], info["energy"])) <= 1
    assert (await http.delete(job["status_url"])).status_code == 200
    assert (await http.get(job["status_url"])).status_code == 404
    assert (await http.get(job["download_url"])).status_code == 404


@pytest.mark.parametrize("request_kwargs, status, says", [
    ({"json": {"avatar": "nobody", "text": "hi"}}, 404, "unknown avatar"),
    ({"json": {"avatar": "default", "text": "   "}}, 422, "text"),
    ({"json": {"avatar": "default"}}, 422, "exactly one"),
    ({"json": {"text": "hi"}}, 422, "avatar"),
    ({"data": {"avatar": "default"}, "files": {"audio": ("a.png", png(skdata.astronaut()), "image/png")}}, 422, "audio"),
    ({"data": {"avatar": "default", "text": "hi"}, "files": {"audio": ("q.wav", b"RIFF", "audio/wav")}}, 422, "exactly one"),
])
async def test_bad_render_requests_are_refused(http, request_kwargs, status, says):
    response = await http.post("/api/renders", **request_kwargs)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


async def test_unknown_renders_are_404(http):
    for path in ("/api/renders/" + "0" * 32, "/api/renders/" + "0" * 32 + "/video.mp4", "/api/renders/../etc"):
        assert (await http.get(path)).status_code == 404


async def test_the_command_line_renders_with_a_progress_bar(app_url, tmp_path):
    out = tmp_path / "cli.mp4"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "serve_app.render", "--url", app_url, "--text", "Hello from the command line.",
                         "-o", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and out.stat().st_size > 1000 and not out.with_name("cli.mp4.partial").exists()
    assert "100.0%" in done.stderr and "done" in done.stderr and "wrote" in done.stdout
    refused = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "serve_app.render", "--url", app_url, "--avatar", "nobody",
                         "--text", "hi", "-o", str(tmp_path / "x.mp4")], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 1 and "unknown avatar" in refused.stderr and not (tmp_path / "x.mp4").exists()
