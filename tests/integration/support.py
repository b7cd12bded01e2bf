"""Helpers the integration tests share."""
from __future__ import annotations

import asyncio
import os

import numpy as np

from serve_app.client import AvatarSession


async def assert_still_streams_and_speaks(session: AvatarSession, text: str) -> None:
    """`session` (a bystander) receives another second of video and speaks `text` to the end."""
    before = len(session.received.video)
    await session.wait_until(lambda r: len(r.video) >= before + 25)
    turn_id = await session.say(text)
    end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
    assert end["interrupted"] is False


async def ask_to_the_end(session: AvatarSession, text: str) -> None:
    """Ask the character; its answer is spoken to its end."""
    turn_id = await session.ask(text)
    end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
    assert end["interrupted"] is False


# --- avatar uploads (admin API) ---

def png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    return encoded.tobytes()


def admin() -> dict:
    return {"Authorization": f"Bearer {os.environ['DH_ADMIN_TOKEN']}"}


async def upload(http, avatar_id: str, content: bytes, content_type: str, headers=None):
    return await http.post(
        "/api/avatars",
        files={"file": (f"source.{content_type.split('/')[1]}", content, content_type)},
        data={"id": avatar_id, "name": avatar_id.title()},
        headers=admin() if headers is None else headers,
    )


async def finished(http, job_id: str, timeout: float = 120, base: str = "") -> dict:
    async def poll():
        stages = set()
        while True:
            job = (await http.get(f"{base}/api/avatars/jobs/{job_id}", headers=admin())).json()
            stages.add(job["stage"])
            if job["state"] in ("done", "failed", "cancelled"):
                return {**job, "stages_seen": stages}
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), timeout)
