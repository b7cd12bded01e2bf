"""Wav2Lip (96 or LiveTalking's 256) as a LipSync backend.

Config (lipsync.options): checkpoint (path to wav2lip.pth, wav2lip_gan.pth or wav2lip256.pth;
relative to the project root), device ("auto": CUDA when the replica has a GPU), and
max_batch_frames. The variant is read from the checkpoint's keys.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from serve_app.config import resolve
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME
from serve_app.engines.lipsync.neural import mel
from serve_app.engines.lipsync.neural.engine import NeuralLipSyncEngine, pad_to, segment_of
from serve_app.engines.lipsync.neural.weights import pick_device

try:
    import torch

    from serve_app.engines.lipsync.neural.wav2lip import face_batch, frames_from_output, load_wav2lip
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"the wav2lip lip-sync backend needs PyTorch: pip install -e '.[neural]' ({exc})") from exc


def _context_frames() -> int:
    """Frames of audio before a chunk its mel windows reach back into: STFT centring, and at
    a reply's end the last frames' windows are pinned to the final 16 mel columns."""
    back = 0
    for total in range(1, 40):
        for first in range(total):
            start = mel.required_span(first, 1, total_samples=total * SAMPLES_PER_FRAME)[0]
            back = max(back, first * SAMPLES_PER_FRAME - start)
    return math.ceil(back / SAMPLES_PER_FRAME)


class Wav2LipEngine(NeuralLipSyncEngine):
    context_frames = _context_frames()
    lookahead_frames = mel.LOOKAHEAD_FRAMES  # its mel window reaches 200 ms past a frame's start

    def __init__(self, avatars_dir: str | Path, checkpoint: str, device: str = "auto",
                 max_batch_frames: int = 128) -> None:
        super().__init__(avatars_dir, max_batch_frames)
        self.device, self.dtype = pick_device(device)
        self.model = load_wav2lip(resolve(checkpoint), self.device, self.dtype)
        self.crop_size = self.model.size

    def features(self, chunks):
        out = []
        for c in chunks:
            segment, offset, first, total = segment_of(c)
            end = mel.required_span(first, c.n_frames)[1]
            segment = pad_to(segment, offset, end if total is None else min(end, total))
            out.append(mel.mel_windows(segment, offset=offset, first_frame=first,
                                       n_frames=c.n_frames, total_samples=total))
        return out

    def generate(self, avatars, sources, feats: np.ndarray) -> np.ndarray:
        faces = np.stack([a.crops[s] for a, s in zip(avatars, sources)])
        x = face_batch(faces).to(self.device, self.dtype)
        m = torch.from_numpy(np.ascontiguousarray(feats[:, None])).to(self.device, self.dtype)
        with torch.inference_mode():
            pred = self.model(m, x)
        return frames_from_output(pred.float())
