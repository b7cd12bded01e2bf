"""Preparing photo and video avatars: ``python -m serve_app.avatars prepare VIDEO --id NAME``."""
from __future__ import annotations

from .prepare import AvatarCancelled, AvatarError, AvatarExists, prepare_avatar, validate_id

__all__ = ["AvatarCancelled", "AvatarError", "AvatarExists", "prepare_avatar", "validate_id"]
