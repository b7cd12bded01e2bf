"""The seed API's MJPEG stream in a plain <img> in headless Chromium: the picture shows and
changes while the uploaded audio plays; stopping the inference ends the stream."""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.browser

# Samples the <img> into a canvas every 40 ms: a hash of its pixels per sample.
SAMPLER_JS = """() => new Promise((resolve) => {
  const img = document.getElementById('stream');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const hashes = [];
  const timer = setInterval(() => {
    if (!img.naturalWidth) return;
    canvas.width = 128; canvas.height = 128;
    ctx.drawImage(img, 0, 0, 128, 128);
    const d = ctx.getImageData(0, 0, 128, 128).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 16) h = (h * 31 + d[i]) | 0;
    hashes.push(h);
    if (hashes.length >= 60) { clearInterval(timer); resolve({ hashes, width: img.naturalWidth }); }
  }, 40);
})"""


async def test_an_img_shows_the_inference_stream(browser_page, app_url):
    page = browser_page
    with open("tests/fixtures/weather_question.wav", "rb") as wav:
        audio = wav.read()
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        started = (await http.post("/api/inference/start", data={"avatar_id": "default"},
                                   files={"audio": ("q.wav", audio, "audio/wav")})).json()
        try:
            await page.goto(app_url + "/api/health")  # same origin: the canvas may read the <img>
            await page.evaluate("url => { document.body.innerHTML = `<img id=stream src=${url}>`; }",
                                started["stream_url"])
            sampled = await page.evaluate(SAMPLER_JS)
            assert sampled["width"] > 100
            assert len(set(sampled["hashes"])) > 10  # a moving picture, not one still
        finally:
            await http.post(f"/api/inference/stop/{started['session_id']}")
