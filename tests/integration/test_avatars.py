"""Bring your own face: upload -> preparation job with progress -> a session with that avatar;
bad uploads get clear errors and leave nothing on disk; serving goes on throughout."""
from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from serve_app.client import AvatarSession
from serve_app.config import PROJECT_ROOT
from tests.integration.support import admin, assert_still_streams_and_speaks, finished, png, upload

pytestmark = pytest.mark.integration

AVATARS = PROJECT_ROOT / "avatars"


def mp4(image: np.ndarray, seconds: float) -> bytes:
    """A short video of `image` slowly zooming, encoded with PyAV."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for i in range(int(seconds * 25)):
            crop = 8 + i % 16
            frame = image[crop : 512 - crop, crop : 512 - crop]
            import cv2

            frame = cv2.resize(frame, (512, 512))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def leftovers(avatar_id: str) -> list[str]:
    return [p.name for p in AVATARS.iterdir() if avatar_id in p.name or p.name.startswith(".tmp")]


async def test_photo_upload_becomes_a_talking_avatar(app_url, http, bystander):
    avatar_id = f"astro-{uuid.uuid4().hex[:6]}"
    try:
        response = await upload(http, avatar_id, png(skdata.astronaut()), "image/png")
        assert response.status_code == 202, response.text
        job = await finished(http, response.json()["job_id"])
        assert job["state"] == "done" and job["percent"] == 100, job
        listed = {a["id"]: a for a in (await http.get("/api/avatars")).json()["avatars"]}
        assert listed[avatar_id]["kind"] == "photo"
        assert (await http.get(f"/api/avatars/{avatar_id}/thumbnail")).status_code == 200
        again = await upload(http, avatar_id, png(skdata.astronaut()), "image/png")
        assert again.status_code == 409

        session = await AvatarSession(app_url, avatar=avatar_id, keep_frames=True).start()
        await session.wait_until(lambda r: len(r.video) >= 10)
        assert session.received.video[-1].frame.shape == (512, 512, 3)
        await session.close()

        # Switch a running default-avatar session to the new face, without reconnecting.
        session = await AvatarSession(app_url, keep_frames=lambda f: f.reshape(-1, 3).mean(0)).start()
        await session.interrupt()
        pc = session.pc
        await session.wait_until(lambda r: len(r.video) >= 10)
        ava_colour = session.received.video[-1].frame
        with pytest.raises(Exception, match="unknown avatar"):
            await session.update(avatar="nobody-here")
        with pytest.raises(Exception, match="unknown voice"):
            await session.update(voice="nobody")
        assert await session.update(avatar=avatar_id, voice="joe") == {"avatar": avatar_id, "voice": "joe"}
        n = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= n + 25)
        astro_colour = session.received.video[-1].frame
        assert np.abs(astro_colour - ava_colour).max() > 20  # another picture entirely
        turn_id = await session.say("Now I have a new face.")
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
        assert end["interrupted"] is False and session.pc is pc  # same peer connection
        cache = (await http.get("/api/health")).json()["lipsync_cache"]
        assert cache["avatars"].get(avatar_id, 0) > 0 and cache["max_avatars"] >= 1
        await session.close()

        assert (await http.delete(f"/api/avatars/{avatar_id}", headers=admin())).status_code == 204
        assert avatar_id not in [a["id"] for a in (await http.get("/api/avatars")).json()["avatars"]]
    finally:
        await http.delete(f"/api/avatars/{avatar_id}", headers=admin())
    assert not leftovers(avatar_id)


async def test_bad_uploads_are_refused_clearly(http, bystander):
    image = png(skdata.astronaut())
    assert (await upload(http, "nobody-a", image, "image/png", headers={})).status_code == 403
    wrong = {"Authorization": "Bearer not-the-admin-token"}
    assert (await upload(http, "nobody-a", image, "image/png", headers=wrong)).status_code == 403
    for bad_id in ("../etc", "a.b", "x/y"):
        response = await upload(http, bad_id, image, "image/png")
        assert response.status_code == 422, (bad_id, response.text)
    text = await upload(http, "nobody-b", b"just some text", "text/plain")
    assert text.status_code == 415 and "image or a video" in text.json()["detail"]
    # Over the size limit: test_limits.py (refused from the headers, before the body is read).
    assert (await http.delete("/api/avatars/default", headers=admin())).status_code == 409
    assert (await http.delete("/api/avatars/no-such-avatar", headers=admin())).status_code == 404
    assert not any(leftovers(name) for name in ("nobody-a", "nobody-b"))


async def test_failed_and_cancelled_preparations_leave_nothing(http, bystander):
    no_face = f"coffee-{uuid.uuid4().hex[:6]}"
    response = await upload(http, no_face, png(skdata.coffee()), "image/png")
    job = await finished(http, response.json()["job_id"])
    assert job["state"] == "failed" and "no face" in job["error"], job
    not_media = f"junk-{uuid.uuid4().hex[:6]}"
    response = await upload(http, not_media, b"definitely not a png", "image/png")
    job = await finished(http, response.json()["job_id"])
    assert job["state"] == "failed" and "image or video" in job["error"], job

    cancelled = f"clip-{uuid.uuid4().hex[:6]}"
    clip = await asyncio.to_thread(mp4, skdata.astronaut(), 8.0)  # seconds of encoding: off the loop
    response = await upload(http, cancelled, clip, "video/mp4")
    job_id = response.json()["job_id"]
    assert (await http.delete(f"/api/avatars/jobs/{job_id}", headers=admin())).status_code == 200
    job = await finished(http, job_id)
    assert job["state"] == "cancelled", job
    assert not any(leftovers(name) for name in (no_face, not_media, cancelled))


async def test_server_side_paths_only_from_allowed_folders(http, degraded_url, bystander, tmp_path):
    """The main profile allows no server-side paths; the degraded one allows one folder."""
    sources = Path("/tmp/dh-test-avatar-sources")
    sources.mkdir(exist_ok=True)
    photo = sources / "astronaut.png"
    photo.write_bytes(png(skdata.astronaut()))
    (sources / "notes.txt").write_text("not media")
    outside = tmp_path / "astronaut.png"
    outside.write_bytes(photo.read_bytes())

    async def by_path(base: str, avatar_id: str, path: str):
        return await http.post(f"{base}/api/avatars", data={"id": avatar_id, "path": path}, headers=admin())

    disabled = await by_path("", "served-a", str(photo))
    assert disabled.status_code == 403 and "source_dirs" in disabled.json()["detail"]
    base = degraded_url.removeprefix(str(http.base_url).rstrip("/"))
    assert (await by_path(base, "served-b", str(outside))).status_code == 403
    beside = sources.parent / f"dh-beside-{uuid.uuid4().hex[:6]}.png"  # a real file out of bounds
    beside.write_bytes(photo.read_bytes())
    try:  # ".." is resolved before the folder check
        assert (await by_path(base, "served-b", str(sources / ".." / beside.name))).status_code == 403
    finally:
        beside.unlink()
    assert (await by_path(base, "served-b", str(sources / "missing.png"))).status_code == 404
    assert (await by_path(base, "served-b", str(sources / "notes.txt"))).status_code == 415
    both = await http.post(f"{base}/api/avatars", data={"id": "served-b", "path": str(photo)},
                           files={"file": ("a.png", png(skdata.astronaut()), "image/png")}, headers=admin())
    assert both.status_code == 422

    avatar_id = f"served-{uuid.uuid4().hex[:6]}"
    response = await by_path(base, avatar_id, str(photo))
    assert response.status_code == 202, response.text
    job = await finished(http, response.json()["job_id"], base=base)
    assert job["state"] == "done", job
    assert photo.is_file()  # the server's file is read, never moved or deleted
    listed = (await http.get("/api/avatars")).json()["avatars"]
    assert any(a["id"] == avatar_id and a["kind"] == "photo" for a in listed)
    assert (await http.delete(f"/api/avatars/{avatar_id}", headers=admin())).status_code == 204


async def test_same_id_uploads_racing_get_one_job_and_one_409(http, bystander):
    avatar_id = f"twin-{uuid.uuid4().hex[:6]}"
    image = png(skdata.astronaut())
    try:
        responses = await asyncio.gather(*(upload(http, avatar_id, image, "image/png") for _ in range(2)))
        assert sorted(r.status_code for r in responses) == [202, 409], [r.text for r in responses]
        conflict = next(r for r in responses if r.status_code == 409)
        assert "already exists" in conflict.json()["detail"] and "Traceback" not in conflict.text
        job = await finished(http, next(r for r in responses if r.status_code == 202).json()["job_id"])
        assert job["state"] == "done", job
    finally:
        await http.delete(f"/api/avatars/{avatar_id}", headers=admin())
    assert not leftovers(avatar_id)


async def test_an_avatar_prepared_again_under_its_id_talks_with_its_new_face(app_url, http, bystander):
    """The lip-sync replicas cache avatars by id: one deleted and prepared again must not
    talk with the old face (the cache checks the folder's version)."""
    avatar_id = f"again-{uuid.uuid4().hex[:6]}"
    astro = skdata.astronaut()
    swapped = np.ascontiguousarray(astro[:, :, ::-1])  # red and blue swapped: another colour
    faces = []  # each preparation's idle colour
    try:
        for image in (astro, swapped):
            response = await upload(http, avatar_id, png(image), "image/png")
            assert response.status_code == 202, response.text
            assert (await finished(http, response.json()["job_id"]))["state"] == "done"
            session = await AvatarSession(app_url, avatar=avatar_id,
                                          keep_frames=lambda f: f.reshape(-1, 3).mean(0)).start()
            try:
                await session.interrupt()
                turn_id = await session.say("Look at my face now.")
                speaking = await session.wait_event(
                    lambda e: e.get("state") == "speaking" and e.get("turn_id") == turn_id, 60)
                end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)
                # Idle frames come from the session actor, which reads the avatar afresh.
                idle = [v.frame for v in session.received.video if v.t < speaking["received_at"]]
                talking = [v.frame for v in session.received.video
                           if speaking["received_at"] <= v.t <= end["received_at"]]
                expected = idle[-1]
                faces.append(expected)
                assert len(talking) > 10
                worst = max(np.abs(colour - expected).max() for colour in talking)
                assert worst < 8, (len(faces), worst, expected, talking[:3])  # this face, never the one before
                # In use: not deleted, and the session's media goes on.
                in_use = await http.delete(f"/api/avatars/{avatar_id}", headers=admin())
                assert in_use.status_code == 409 and "in use by 1 session" in in_use.json()["detail"]
                n = len(session.received.video)
                await session.wait_until(lambda r: len(r.video) >= n + 25)
            finally:
                await session.close()
            assert (await http.delete(f"/api/avatars/{avatar_id}", headers=admin())).status_code == 204
        assert np.abs(faces[0] - faces[1]).max() > 15  # the two faces are told apart
    finally:
        await http.delete(f"/api/avatars/{avatar_id}", headers=admin())
    assert not leftovers(avatar_id)


async def test_serving_went_on_during_uploads(bystander):
    await assert_still_streams_and_speaks(bystander, "Still streaming.")
