"""The Wav2Lip generator (Prajwal et al., 2020): the official 96x96 model and LiveTalking's 256x256
variant, with module names matching the released checkpoints' keys.

Inputs: a mel window (B, 1, 80, 16) from :mod:`.mel` and a face stack (B, 6, S, S) in [0, 1]: the
crop with its lower half blanked, then the reference crop, BGR (see :func:`face_batch`). Output:
the crop (B, 3, S, S) in [0, 1], BGR, with the mouth redrawn.

The 96 model is the released ``wav2lip.pth`` / ``wav2lip_gan.pth``; the 256 model is the one
LiveTalking ships as ``wav2lip256.pth`` (deeper encoder, 1024 channels at the bottleneck and a
spatial-attention gate (``sam``) on every skip connection). :func:`load_wav2lip` tells them apart by
their keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .weights import WeightsError, check_keys, load_state, require_file

WHAT = "Wav2Lip checkpoint"
SOURCE = "the Wav2Lip release (wav2lip.pth / wav2lip_gan.pth) or LiveTalking's wav2lip256.pth"
VARIANTS = {"96": 96, "256": 256}


class Conv2d(nn.Module):
    """Conv + BatchNorm + ReLU, optionally adding the input before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: Any, stride: Any, padding: Any,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """Transposed conv + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: Any, stride: Any, padding: Any,
                 output_padding: Any = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class SpatialAttention(nn.Module):
    """A one-channel gate from the channel mean and max of a feature map."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.sigmoid(self.conv1(pooled))


class SAM(nn.Module):
    """Gates the decoder output ``se`` by the skip feature ``sp``'s attention: ``se * att + se``
    (broadcasting a 1x1 decoder output up to the skip's size)."""

    def __init__(self) -> None:
        super().__init__()
        self.sa = SpatialAttention()

    def forward(self, sp: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
        return se * self.sa(sp) + se


def _res(c: int, n: int) -> list[nn.Module]:
    return [Conv2d(c, c, 3, 1, 1, residual=True) for _ in range(n)]


def _down(cin: int, cout: int, n_res: int) -> nn.Sequential:
    return nn.Sequential(Conv2d(cin, cout, 3, 2, 1), *_res(cout, n_res))


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    return nn.Sequential(Conv2dTranspose(cin, cout, 3, 2, 1, output_padding=1), *_res(cout, n_res))


def _face_encoder_96() -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
        _down(16, 32, 2),  # 48
        _down(32, 64, 3),  # 24
        _down(64, 128, 2),  # 12
        _down(128, 256, 2),  # 6
        _down(256, 512, 1),  # 3
        nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
    ])


def _audio_encoder_96() -> nn.Sequential:
    return nn.Sequential(
        Conv2d(1, 32, 3, 1, 1), *_res(32, 2),
        Conv2d(32, 64, 3, (3, 1), 1), *_res(64, 2),
        Conv2d(64, 128, 3, 3, 1), *_res(128, 2),
        Conv2d(128, 256, 3, (3, 2), 1), *_res(256, 1),
        Conv2d(256, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0),
    )


def _face_decoder_96() -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(Conv2d(512, 512, 1, 1, 0)),
        nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), *_res(512, 1)),  # 3
        _up(1024, 512, 2),  # 6
        _up(768, 384, 2),  # 12
        _up(512, 256, 2),  # 24
        _up(320, 128, 2),  # 48
        _up(160, 64, 2),  # 96
    ])


def _face_encoder_256() -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(Conv2d(6, 16, 7, 1, 3), *_res(16, 3)),  # 256
        _down(16, 32, 3),  # 128
        _down(32, 64, 3),  # 64
        _down(64, 128, 3),  # 32
        _down(128, 256, 3),  # 16
        _down(256, 512, 3),  # 8
        _down(512, 1024, 3),  # 4
        nn.Sequential(Conv2d(1024, 1024, 3, 1, 0), Conv2d(1024, 1024, 1, 1, 0),
                      Conv2d(1024, 1024, 1, 1, 0)),  # 2
    ])


def _audio_encoder_256() -> nn.Sequential:
    return nn.Sequential(
        Conv2d(1, 32, 3, 1, 1), *_res(32, 2),
        Conv2d(32, 64, 3, (3, 1), 1), *_res(64, 2),
        Conv2d(64, 128, 3, 3, 1), *_res(128, 2),
        Conv2d(128, 256, 3, (3, 2), 1), *_res(256, 2),
        Conv2d(256, 512, 3, 1, 1), *_res(512, 2),
        Conv2d(512, 1024, 3, 1, 0), Conv2d(1024, 1024, 1, 1, 0),
    )


def _face_decoder_256() -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(Conv2d(1024, 1024, 1, 1, 0)),  # 1 (gated up to 2)
        nn.Sequential(Conv2dTranspose(2048, 1024, 3, 1, 0), *_res(1024, 1)),  # 4
        _up(2048, 1024, 2),  # 8
        _up(1536, 768, 2),  # 16
        _up(1024, 512, 2),  # 32
        _up(640, 256, 2),  # 64
        _up(320, 128, 2),  # 128
        _up(160, 64, 2),  # 256
    ])


class Wav2Lip(nn.Module):
    """Wav2Lip generator; ``variant`` "96" (official) or "256" (LiveTalking)."""

    def __init__(self, variant: str = "96") -> None:
        super().__init__()
        variant = str(variant)
        if variant not in VARIANTS:
            raise ValueError(f"Wav2Lip variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.size = VARIANTS[variant]
        if variant == "96":
            self.face_encoder_blocks = _face_encoder_96()
            self.audio_encoder = _audio_encoder_96()
            self.face_decoder_blocks = _face_decoder_96()
            self.sam = None
        else:
            self.sam = SAM()
            self.face_encoder_blocks = _face_encoder_256()
            self.audio_encoder = _audio_encoder_256()
            # in the released checkpoints but not used by the forward pass
            self.audio_refine = nn.Sequential(Conv2d(1024, 1024, 1, 1, 0), Conv2d(1024, 1024, 1, 1, 0))
            self.face_decoder_blocks = _face_decoder_256()
        self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, 80, 16), face (B, 6, S, S) -> (B, 3, S, S) in [0, 1]."""
        if face.dim() != 4 or face.shape[1] != 6 or face.shape[-2:] != (self.size, self.size):
            raise ValueError(f"Wav2Lip-{self.variant}: face must be (B, 6, {self.size}, {self.size}), "
                             f"got {tuple(face.shape)}")
        if audio.dim() != 4 or tuple(audio.shape[1:]) != (1, 80, 16) or audio.shape[0] != face.shape[0]:
            raise ValueError(f"Wav2Lip: audio must be (B, 1, 80, 16) with B = {face.shape[0]}, "
                             f"got {tuple(audio.shape)}")
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = block(x)
            skip = feats.pop()
            if self.sam is not None:
                x = self.sam(skip, x)
            x = torch.cat((x, skip), dim=1)
        return self.output_block(x)


# --------------------------------------------------------------------------- checkpoints
_PREFIX = "module."


def _strip(key: str) -> str:
    return key.removeprefix(_PREFIX)


def _state_dict_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    inner = ckpt.get("state_dict")
    return inner if isinstance(inner, dict) else ckpt


def detect_variant(state: dict[str, Any]) -> str:
    """"256" when the checkpoint (or its "state_dict") has ``face_encoder_blocks.7.*`` keys, else
    "96"; WeightsError when it is not a Wav2Lip generator at all."""
    keys = [_strip(str(k)) for k in _state_dict_of(state)]
    if not any(k.startswith("face_encoder_blocks.") for k in keys):
        if any(k.startswith(("face_encoder.", "audio_encoder.")) for k in keys):
            hint = ("its keys (face_encoder.*, audio_encoder.*) are those of SyncNet, the lip-sync expert "
                    "discriminator (lipsync_expert.pth), not of the generator")
        else:
            shown = ", ".join(keys[:4]) or "none"
            hint = f"it has no face_encoder_blocks.* keys (keys: {shown})"
        raise WeightsError(f"{WHAT}: not a Wav2Lip generator: {hint}")
    if any(k.startswith("binary_pred.") for k in keys):
        raise WeightsError(f"{WHAT}: not a Wav2Lip generator: its binary_pred.* keys are those of the "
                           "visual-quality discriminator (Wav2Lip_disc_qual), not of the generator")
    return "256" if any(k.startswith("face_encoder_blocks.7.") for k in keys) else "96"


def load_wav2lip(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Wav2Lip:
    """The Wav2Lip generator in ``path`` (official layout ``{"state_dict": {"module.<key>": ...},
    ...}``, or a bare state dict, with or without the ``module.`` prefix), in eval mode on
    ``device`` / ``dtype``. The variant (96 or 256) is read from the keys."""
    p = require_file(path, WHAT, SOURCE)
    ckpt = load_state(p, WHAT)
    if "state_dict" in ckpt and not isinstance(ckpt["state_dict"], dict):
        raise WeightsError(f"{WHAT}: {p} has a 'state_dict' entry that is a "
                           f"{type(ckpt['state_dict']).__name__}, not a dict of tensors")
    raw = _state_dict_of(ckpt)
    if "state_dict" not in ckpt and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{WHAT}: {p} has no 'state_dict' entry and holds no tensors "
                           f"(entries: {', '.join(map(str, list(raw)[:6])) or 'none'})")
    not_tensors = [str(k) for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{WHAT}: {p} is not a state dict of tensors: {len(not_tensors)} entries are "
                           f"not tensors, e.g. {', '.join(not_tensors[:3])}")
    state = {_strip(str(k)): v for k, v in raw.items()}
    try:
        variant = detect_variant(state)
    except WeightsError as exc:
        raise WeightsError(f"{exc} (file {p})") from None
    model = Wav2Lip(variant)
    check_keys(model, state, f"{WHAT} (Wav2Lip-{variant})", p)
    del state, raw, ckpt
    return model.to(device=device, dtype=dtype).eval()


def save_official_checkpoint(model: Wav2Lip, path: str | Path) -> None:
    """Write ``model`` in the released checkpoints' layout (``module.``-prefixed keys under
    "state_dict", plus the training entries), e.g. random weights for tests and benchmarks."""
    state = {_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": None, "global_step": 0, "global_epoch": 0}, str(path))


# --------------------------------------------------------------------------- tensors in and out
def face_batch(faces_bgr: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR crops -> (B, 6, S, S) float32 in [0, 1]: channels 0-2 the crop with
    rows >= S // 2 zeroed (the mouth to draw), 3-5 the whole crop (the reference), as in Wav2Lip's
    inference."""
    faces = np.asarray(faces_bgr)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.shape[1] != faces.shape[2]:
        raise ValueError(f"face_batch: expected (B, S, S, 3) crops, got {faces.shape}")
    ref = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    masked = ref.clone()
    masked[:, :, faces.shape[1] // 2:] = 0.0
    return torch.cat([masked, ref], dim=1).contiguous()


def audio_batch(windows: np.ndarray) -> torch.Tensor:
    """(B, 80, 16) mel windows (see :func:`.mel.mel_windows`) -> (B, 1, 80, 16) float32 tensor."""
    w = np.asarray(windows, dtype=np.float32)
    if w.ndim != 3 or w.shape[1:] != (80, 16):
        raise ValueError(f"audio_batch: expected (B, 80, 16) mel windows, got {w.shape}")
    return torch.from_numpy(np.ascontiguousarray(w)).unsqueeze(1)


def frames_from_output(pred: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) generator output in [0, 1] -> (B, S, S, 3) uint8 BGR, rounded and clipped."""
    out = (pred.detach().float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()
