"""A photo/video avatar as a neural engine sees it: the frames (through FaceAvatar, which
also gives the idle loop), a model-input crop per stored frame, its box, and the blend mask.

Preparation stores crops and boxes under the avatar's "neural" manifest entry; an avatar
prepared before that (or by hand) gets them computed from its face boxes when loaded."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from serve_app.engines.lipsync.face import FaceAvatar
from serve_app.engines.lipsync.neural.crops import crop_boxes, cut_crop, lower_face_mask
from serve_app.engines.lipsync.sprite import MANIFEST

log = logging.getLogger(__name__)


class NeuralAvatar:
    def __init__(self, folder: str | Path, crop_size: int) -> None:
        self.face = FaceAvatar(folder)
        self.id, self.name, self.kind, self.size = self.face.id, self.face.name, self.face.kind, self.face.size
        self.thumbnail_path = self.face.thumbnail_path
        manifest = self.face.manifest
        neural = manifest.get("neural") or {}
        n = self.face.n_frames
        if "boxes" in neural:
            self.boxes = np.asarray(neural["boxes"], dtype=int).reshape(-1, 4)
        elif "face_boxes" in manifest:
            self.boxes = crop_boxes(np.asarray(manifest["face_boxes"]), self.size)
        else:
            raise ValueError(f"{self.face.folder / MANIFEST}: neither 'neural.boxes' nor "
                             "'face_boxes': prepare the avatar again")
        if len(self.boxes) != n:
            raise ValueError(f"{self.face.folder / MANIFEST}: {len(self.boxes)} face boxes for {n} frames")
        stored = self.face.folder / str(neural.get("crops", "neural/crops"))
        files = sorted(stored.glob("*.jpg")) if stored.is_dir() else []
        if len(files) == n:
            crops = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]  # stored as BGR
        else:
            log.info("avatar %s has no stored crops: cutting them from its frames", self.id)
            crops = [cut_crop(cv2.cvtColor(self.face.stored_frame(i), cv2.COLOR_RGB2BGR), self.boxes[i])
                     for i in range(n)]
        size = crop_size
        self.crops = np.stack([c if c.shape[0] == size else
                               cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        stored_mask = self.face.folder / str(neural.get("mask", "neural/mask.png"))
        mask = cv2.imread(str(stored_mask), cv2.IMREAD_GRAYSCALE) if stored_mask.is_file() else None
        self.mask = (cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
                     if mask is not None else lower_face_mask(size))
        self.extra: dict[str, np.ndarray] = {}  # engine-specific (MuseTalk latents)
        self.neural_manifest = neural

    @property
    def nbytes(self) -> int:
        return int(self.crops.nbytes + self.mask.nbytes + sum(a.nbytes for a in self.extra.values()))

    def source_index(self, index: int) -> int:
        return self.face.source_index(index)

    def idle_frame(self, index: int) -> np.ndarray:
        return self.face.idle_frame(index)

    def mouth_box(self, index: int) -> tuple[int, int, int, int]:
        """The region a talking frame may change (for crossfades): the crop box."""
        return tuple(int(v) for v in self.boxes[self.source_index(index)])

