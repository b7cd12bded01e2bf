"""MuseTalk 1.5 as a LipSync backend.

Config (lipsync.options): models_dir (the official layout: musetalkV15/musetalk.json and
unet.pth, sd-vae/, whisper/; relative to the project root) or the four paths one by one
(unet_config, unet_weights, vae_dir, whisper_dir), device, max_batch_frames.
The avatar's reference latents come from preparation (neural/musetalk_latents.npy) or are
computed once when the avatar is loaded.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from serve_app.config import resolve
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME
from serve_app.engines.lipsync.neural.avatar import NeuralAvatar
from serve_app.engines.lipsync.neural.crops import LATENTS_FILE
from serve_app.engines.lipsync.neural.engine import NeuralLipSyncEngine, pad_to, segment_of

try:
    from serve_app.engines.lipsync.neural import musetalk
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the musetalk lip-sync backend needs PyTorch, diffusers and transformers: "
                      f"pip install -e '.[neural]' ({exc})") from exc

log = logging.getLogger(__name__)


def muse_paths(models_dir: str | Path = "models", **override: str | None) -> musetalk.MuseTalkPaths:
    paths = musetalk.MuseTalkPaths.from_models_dir(resolve(models_dir))
    for name, value in override.items():
        if value is not None:
            setattr(paths, name, resolve(value))
    return paths


def load_model(models_dir: str = "models", unet_config: str | None = None, unet_weights: str | None = None,
               vae_dir: str | None = None, whisper_dir: str | None = None, device: str = "auto",
               **_engine_options) -> musetalk.MuseTalk:
    """The MuseTalk models named by the backend's config options."""
    paths = muse_paths(models_dir, unet_config=unet_config, unet_weights=unet_weights,
                       vae_dir=vae_dir, whisper_dir=whisper_dir)
    return musetalk.MuseTalk(paths, device)


class MuseTalkEngine(NeuralLipSyncEngine):
    crop_size = musetalk.SIZE
    context_frames = musetalk.CONTEXT_FRAMES
    lookahead_frames = musetalk.LOOKAHEAD_FRAMES

    def __init__(self, avatars_dir: str | Path, max_batch_frames: int = 64, **model_options: str) -> None:
        super().__init__(avatars_dir, max_batch_frames)
        self.model = load_model(**model_options)

    def prepare_avatar(self, avatar: NeuralAvatar) -> None:
        n = len(avatar.crops)
        path = avatar.face.folder / str(avatar.neural_manifest.get("musetalk_latents", LATENTS_FILE))
        if path.is_file():
            latents = np.load(path)
            if latents.shape[0] == n and latents.shape[1:] == (8, 32, 32):
                avatar.extra["latents"] = latents
                return
            log.warning("%s: latents of shape %s do not fit %d frames; computing them again", path,
                        latents.shape, n)
        log.info("computing MuseTalk reference latents for %s (%d frames)", avatar.id, n)
        avatar.extra["latents"] = self.model.encode_reference(avatar.crops)

    def features(self, chunks):
        requests = []
        for c in chunks:
            segment, offset, first, total = segment_of(c)
            end = (first + c.n_frames + self.lookahead_frames) * SAMPLES_PER_FRAME
            segment = pad_to(segment, offset, end if total is None else min(end, total))
            requests.append((segment, offset, first, c.n_frames))
        return self.model.audio_prompts_batch(requests)

    def generate(self, avatars, sources, feats: np.ndarray) -> np.ndarray:
        latents = np.stack([a.extra["latents"][s] for a, s in zip(avatars, sources)])
        return self.model.generate(latents, feats)
