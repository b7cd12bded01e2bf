"""The avatar store: the one module that owns prepared avatars on disk.

Layout: `<avatars_dir>/<id>/manifest.json` plus the files it names (avatars/README.md).
Listings read manifests only, never a frame, so `GET /api/avatars` costs a few small file
reads however big the avatars are. Preparations build in `.tmp-<id>-*` and rename into place;
deletes rename to `.trash-<id>-*` first: a reader never sees half an avatar. What a crash
leaves of either is swept at start (`sweep`).
"""
from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path

from serve_app.engines.lipsync.sprite import MANIFEST, read_manifest
from serve_app.engines.lipsync.viseme_engine import AVATAR_ID, AVATAR_KINDS

log = logging.getLogger(__name__)

TEMP_PREFIXES = (".tmp-", ".trash-")  # a preparation being built, an avatar being deleted


class AvatarNotFound(KeyError):
    pass


class AvatarStore:
    def __init__(self, avatars_dir: Path) -> None:
        self.dir = Path(avatars_dir)

    def _folder(self, avatar_id: str) -> Path | None:
        if not isinstance(avatar_id, str) or not AVATAR_ID.fullmatch(avatar_id):
            return None
        folder = self.dir / avatar_id
        return folder if (folder / MANIFEST).is_file() else None

    def exists(self, avatar_id: str) -> bool:
        return self._folder(avatar_id) is not None

    def get(self, avatar_id: str) -> dict:
        """One avatar's listing entry; AvatarNotFound if there is none (or its manifest is
        broken: the reason is logged)."""
        folder = self._folder(avatar_id)
        entry = self._entry(folder) if folder else None
        if entry is None:
            raise AvatarNotFound(f"no avatar {avatar_id!r}")
        return entry

    def list(self) -> list[dict]:
        """Every prepared avatar, from its manifest alone; broken ones are skipped (logged)."""
        if not self.dir.is_dir():
            return []
        folders = sorted(p for p in self.dir.iterdir() if AVATAR_ID.fullmatch(p.name) and (p / MANIFEST).is_file())
        return [entry for entry in map(self._entry, folders) if entry is not None]

    def _entry(self, folder: Path) -> dict | None:
        try:
            manifest = read_manifest(folder, tuple(AVATAR_KINDS))
            created = (folder / MANIFEST).stat().st_mtime
        except (ValueError, OSError) as exc:
            log.warning("skipping avatar %r: %s", folder.name, exc)
            return None
        thumbnail = manifest.get("thumbnail")
        return {
            "id": folder.name,
            "name": manifest.get("name", folder.name),
            "kind": manifest["kind"],
            "size": list(manifest.get("size", [])),
            "has_thumbnail": bool(thumbnail) and (folder / thumbnail).is_file(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        }

    def thumbnail(self, avatar_id: str) -> Path:
        folder = self._folder(avatar_id)
        name = read_manifest(folder, tuple(AVATAR_KINDS)).get("thumbnail") if folder else None
        path = folder / name if name else None
        if path is None or not path.is_file() or path.resolve().parent != folder.resolve():
            raise AvatarNotFound(f"no thumbnail for avatar {avatar_id!r}")
        return path

    def delete(self, avatar_id: str) -> None:
        """Rename the folder away (atomic), then remove it. The caller checked it is unused;
        sessions that already loaded it keep their copy (a session's media never dies)."""
        if self._folder(avatar_id) is None:
            raise AvatarNotFound(f"no avatar {avatar_id!r}")
        trash = self.dir / f".trash-{avatar_id}-{uuid.uuid4().hex[:8]}"
        (self.dir / avatar_id).rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self, older_than_s: float) -> list[str]:
        """Remove what crashed preparations and deletes left (`.tmp-*`, `.trash-*` older than
        `older_than_s`: a live preparation is never that old, its job has a time limit).
        Returns the names removed."""
        removed = []
        if not self.dir.is_dir():
            return removed
        now = time.time()
        for path in self.dir.iterdir():
            if path.name.startswith(TEMP_PREFIXES) and path.is_dir():
                try:
                    stale = now - path.stat().st_mtime > older_than_s
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
        if removed:
            log.info("swept %d stale avatar folders: %s", len(removed), removed)
        return removed
