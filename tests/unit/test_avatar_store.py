"""The avatar store: listings from manifests alone, thumbnails inside their folder, atomic
deletes, the sweep of what crashed jobs leave, and the jobs' queue bound."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from serve_app.avatars.jobs import MAX_QUEUED, AvatarJobs, JobsBusy
from serve_app.avatars.store import AvatarNotFound, AvatarStore

DEFAULT = Path(__file__).resolve().parents[2] / "avatars" / "default"


def copy_avatar(root: Path, name: str, **changes) -> Path:
    folder = root / name
    shutil.copytree(DEFAULT, folder)
    manifest = {**json.loads((folder / "manifest.json").read_text()), "id": name, **changes}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_listing_reads_manifests_only_and_skips_broken_ones(tmp_path, caplog):
    good = copy_avatar(tmp_path, "good")
    for png in good.glob("*.png"):
        if png.name != "thumbnail.png":
            png.write_bytes(b"not a png")  # a listing that decoded a frame would fail here
    copy_avatar(tmp_path, "wrong_kind", kind="hologram")
    (copy_avatar(tmp_path, "bad_json") / "manifest.json").write_text("{not json")
    (tmp_path / "no_manifest").mkdir()
    shutil.copytree(DEFAULT, tmp_path / ".tmp-half-built")
    listed = AvatarStore(tmp_path).list()
    assert [a["id"] for a in listed] == ["good"]
    entry = listed[0]
    assert {k: entry[k] for k in ("name", "kind", "size", "has_thumbnail")} == {
        "name": "Ava", "kind": "sprite", "size": [512, 512], "has_thumbnail": True}
    assert entry["created_at"].endswith("Z")
    assert "wrong_kind" in caplog.text and "bad_json" in caplog.text


def test_get_exists_and_thumbnail(tmp_path):
    store = AvatarStore(tmp_path)
    copy_avatar(tmp_path, "ava")
    assert store.exists("ava") and store.get("ava")["id"] == "ava"
    assert store.thumbnail("ava") == tmp_path / "ava" / "thumbnail.png"
    for missing in ("nobody", "../ava", "a/b", ""):
        assert not store.exists(missing)
        with pytest.raises(AvatarNotFound):
            store.get(missing)


def test_a_thumbnail_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    copy_avatar(tmp_path, "sneaky", thumbnail="../secret.png")
    with pytest.raises(AvatarNotFound):
        AvatarStore(tmp_path).thumbnail("sneaky")


def test_delete_leaves_nothing(tmp_path):
    store = AvatarStore(tmp_path)
    copy_avatar(tmp_path, "gone")
    store.delete("gone")
    assert not store.exists("gone") and list(tmp_path.iterdir()) == []
    with pytest.raises(AvatarNotFound):
        store.delete("gone")


def test_sweep_removes_only_stale_temporary_folders(tmp_path):
    copy_avatar(tmp_path, "ava")
    old = [tmp_path / ".tmp-ava-1234", tmp_path / ".trash-bob-5678", tmp_path / ".tmp-upload-abcd"]
    fresh = tmp_path / ".tmp-carol-9999"  # a preparation running now
    for folder in [*old, fresh]:
        folder.mkdir()
        (folder / "frame.png").write_bytes(b"x" * 100)
    hour_ago = time.time() - 3600
    for folder in old:
        os.utime(folder, (hour_ago, hour_ago))
    removed = AvatarStore(tmp_path).sweep(older_than_s=600)
    assert sorted(removed) == sorted(f.name for f in old)
    assert fresh.is_dir() and AvatarStore(tmp_path).exists("ava")


async def test_jobs_sweep_at_start_and_bound_their_queue(tmp_path):
    stale = tmp_path / ".tmp-upload-dead"
    stale.mkdir()
    os.utime(stale, (0, 0))
    jobs = AvatarJobs(tmp_path, time_limit_s=60)
    assert not stale.exists()
    png = (DEFAULT / "thumbnail.png").read_bytes()
    for k in range(MAX_QUEUED):
        jobs.start(png, "face.png", f"a{k}", None)
    with pytest.raises(JobsBusy, match="queued"):
        jobs.start(png, "face.png", "one_more", None)
    for k in range(MAX_QUEUED):  # what is left of them is cleaned up as they end
        jobs.cancel(jobs._jobs and next(j.id for j in jobs._jobs.values() if j.avatar_id == f"a{k}"))
    jobs._worker.cancel()
