"""MuseTalk 1.5 (TMElyralab/MuseTalk) on the user's checkpoints: one UNet step in the latent space of
the Stable Diffusion VAE, conditioned on whisper-tiny encoder features.

The pipeline, as in the official inference code:

* reference: the 256x256 face crop (RGB, normalised to [-1, 1]) and the same crop with its lower
  half blanked are encoded by the VAE; their latents, concatenated, are the UNet input (8, 32, 32).
  Computed once per avatar frame (:meth:`MuseTalk.encode_reference`).
* audio: whisper-tiny's encoder on 16 kHz audio padded to 30 s gives 1500 steps (50 per second)
  of 5 stacked hidden states (embeddings + 4 layers) of 384 values. Video frame ``i`` (25 fps)
  takes the 10 steps ``2i-4 .. 2i+5`` (two frames before it, itself, two after), flattened to
  50 tokens of 384 (:meth:`MuseTalk.audio_prompts`).
* generation: a sinusoidal positional encoding is added to the tokens; UNet(latents, t=0,
  tokens) predicts the face latent, which the VAE decodes (:meth:`MuseTalk.generate`). No scheduler.

torch, diffusers and transformers are imported lazily, so the constants here can be read without
the `neural` extra.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base import SPEECH_RATE, FPS
from .weights import WeightsError, check_keys, load_state, pick_device, require_dir, require_file

SIZE = 256                   # face crop side, pixels
LATENT_SIZE = SIZE // 8      # VAE latent side
LATENT_CHANNELS = 4
AUDIO_STEPS_PER_FRAME = 2    # whisper runs at 50 steps/s, video at 25 frames/s
PROMPT_TOKENS = 50           # 10 whisper steps x 5 hidden states
FEATURE_DIM = 384            # whisper-tiny d_model
HIDDEN_STATES = 5            # embeddings + 4 encoder layers
WINDOW_FRAMES = 2            # frames of audio either side of a video frame
PAD_STEPS = WINDOW_FRAMES * AUDIO_STEPS_PER_FRAME             # 4 steps before the frame
WINDOW_STEPS = AUDIO_STEPS_PER_FRAME * (2 * WINDOW_FRAMES + 1)  # 10 steps per video frame
SAMPLES_PER_STEP = SPEECH_RATE // (FPS * AUDIO_STEPS_PER_FRAME)  # 320 samples = 20 ms
WHISPER_STEPS = 1500         # encoder output steps for the 30 s input
MAX_SEGMENT_SAMPLES = WHISPER_STEPS * SAMPLES_PER_STEP         # 30 s
ENCODE_BATCH = 16            # crops per VAE encode call

# Audio needed after a chunk's last frame i (which starts at t_i = 40 ms * i): its window ends with
# whisper step 2i+5, i.e. the 20 ms at t_i+100..t_i+120 ms -> 3 frames. The front end reaches a
# little further: step s comes from conv2 (kernel 3, stride 2) over conv1 (kernel 3) over mel frames
# 2s-2 .. 2s+2, and mel frame m is a 400-sample STFT window centred on sample 160m, so step 2i+5
# reads up to sample 160*(4i+12)+200 = 640i+2120, t_i+132.5 ms -> round up to 4 whole frames.
# Whoever counts from the END of frame i needs only 3; 4 covers both readings. (Whisper's
# attention is global, so later audio still nudges the features; this is the audio the window
# actually needs.)
LOOKAHEAD_FRAMES = 4
# Audio before a chunk's first frame: its window starts at step 2i-4 (80 ms back) and the front end
# reads from sample 640i-1800 (2.8 frames back), so 3 frames is the minimum; whisper is not
# causal, so more context brings the features closer to the whole-utterance ones. 400 ms.
CONTEXT_FRAMES = 10

UNET_SOURCE = "TMElyralab/MuseTalk (models/musetalkV15)"
VAE_SOURCE = "stabilityai/sd-vae-ft-mse"
WHISPER_SOURCE = "openai/whisper-tiny"


@dataclass
class MuseTalkPaths:
    unet_config: Path
    unet_weights: Path
    vae_dir: Path
    whisper_dir: Path

    @classmethod
    def from_models_dir(cls, models_dir: str | Path) -> MuseTalkPaths:
        """The official layout under MuseTalk's ``models`` folder."""
        root = Path(models_dir).expanduser()
        return cls(unet_config=root / "musetalkV15" / "musetalk.json",
                   unet_weights=root / "musetalkV15" / "unet.pth",
                   vae_dir=root / "sd-vae", whisper_dir=root / "whisper")


def positional_encoding(length: int = PROMPT_TOKENS, d_model: int = FEATURE_DIM) -> np.ndarray:
    """MuseTalk's sinusoidal encoding, (length, d_model) float32 computed in float64:
    pe[pos, 2k] = sin(pos / 10000^(2k/d)), pe[pos, 2k+1] = cos(the same)."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    angle = pos / np.power(10000.0, np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    pe = np.zeros((length, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe.astype(np.float32)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{what}: could not read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{what}: {path} holds a {type(data).__name__}, not a JSON object")
    return data


def _mismatch(cfg: dict[str, Any], expected: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """'key found (expected x)' for each value that differs; `defaults` are the library's own for
    keys a config may leave out."""
    found = {k: cfg.get(k, defaults.get(k)) for k in expected}
    return [f"{k} {found[k]!r} (expected {v!r})" if k in cfg or k in defaults else f"{k} missing (expected {v!r})"
            for k, v in expected.items() if found[k] != v]


@dataclass
class _Request:
    segment: np.ndarray   # float32 mono
    steps: np.ndarray     # (n, WINDOW_STEPS) global whisper steps
    local: np.ndarray     # the same, relative to the segment start
    valid: np.ndarray     # (n, WINDOW_STEPS) bool: inside both the reply and the segment


class MuseTalk:
    """The three MuseTalk 1.5 models on one device (fp16 on a GPU, fp32 on the CPU)."""

    def __init__(self, paths: MuseTalkPaths, device: str = "auto"):
        self.paths = paths
        self.device, self.dtype = pick_device(device)
        unet_cfg_path = require_file(paths.unet_config, "MuseTalk UNet config", UNET_SOURCE)
        unet_path = require_file(paths.unet_weights, "MuseTalk UNet weights", UNET_SOURCE)
        vae_dir = require_dir(paths.vae_dir, "MuseTalk VAE", VAE_SOURCE,
                              ("config.json", "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.bin"))
        whisper_dir = require_dir(paths.whisper_dir, "MuseTalk whisper", WHISPER_SOURCE,
                                  ("config.json", "model.safetensors|pytorch_model.bin",
                                   "preprocessor_config.json"))
        # Every config is checked before any weights are read.
        unet_cfg = _read_json(unet_cfg_path, "MuseTalk UNet config")
        bad = _mismatch(unet_cfg, {"in_channels": 2 * LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
                                   "cross_attention_dim": FEATURE_DIM},
                        {"in_channels": 4, "out_channels": 4, "cross_attention_dim": 1280})
        if bad:
            raise WeightsError(f"MuseTalk UNet config: {unet_cfg_path} is not MuseTalk's UNet: "
                               f"{', '.join(bad)} (get musetalk.json from {UNET_SOURCE})")
        vae_cfg = _read_json(vae_dir / "config.json", "MuseTalk VAE")
        bad = _mismatch(vae_cfg, {"in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS},
                        {"in_channels": 3, "out_channels": 3, "latent_channels": 4})
        if len(vae_cfg.get("block_out_channels") or ()) != 4:
            bad.append(f"{len(vae_cfg.get('block_out_channels') or ())} blocks (expected 4: "
                       f"{SIZE} -> {LATENT_SIZE} pixels)")
        if bad:
            raise WeightsError(f"MuseTalk VAE: {vae_dir / 'config.json'} is not an SD VAE: {', '.join(bad)} "
                               f"(get the folder from {VAE_SOURCE})")
        w_cfg = _read_json(whisper_dir / "config.json", "MuseTalk whisper")
        bad = _mismatch(w_cfg, {"model_type": "whisper", "d_model": FEATURE_DIM,
                                "encoder_layers": HIDDEN_STATES - 1, "max_source_positions": WHISPER_STEPS,
                                "num_mel_bins": 80},
                        {"d_model": 384, "encoder_layers": 4, "max_source_positions": 1500, "num_mel_bins": 80})
        if bad:
            raise WeightsError(f"MuseTalk whisper: {whisper_dir / 'config.json'} is not whisper-tiny "
                               f"(MuseTalk needs d_model {FEATURE_DIM} and {HIDDEN_STATES} hidden states, "
                               f"i.e. {HIDDEN_STATES - 1} encoder layers); found {', '.join(bad)} "
                               f"(get the folder from {WHISPER_SOURCE})")

        import torch

        self._unet = self._load_unet(unet_cfg, unet_cfg_path, unet_path)
        self._vae = self._load_vae(vae_dir)
        self._whisper, self._features = self._load_whisper(whisper_dir)
        self.scaling_factor = float(self._vae.config.scaling_factor)
        self._pe = torch.from_numpy(positional_encoding()).to(self.device)  # float32, added before casting
        self._t0 = torch.zeros(1, dtype=torch.long, device=self.device)

    # -- loading ----------------------------------------------------------------------------------

    def _finish(self, model: Any) -> Any:
        import torch

        model = model.to(self.device)
        # .half()/.float(), not .to(dtype): diffusers warns on every such call. Explicit either
        # way, as a checkpoint may load in its stored dtype.
        model = model.half() if self.dtype == torch.float16 else model.float()
        model.eval().requires_grad_(False)
        return model

    def _load_unet(self, cfg: dict[str, Any], cfg_path: Path, weights: Path) -> Any:
        import torch
        from diffusers import UNet2DConditionModel

        what = "MuseTalk UNet weights"
        try:
            # Built on the GPU when there is one: initialising ~0.9 B parameters there is quick.
            with torch.device(self.device):
                unet = UNet2DConditionModel.from_config(cfg)
        except Exception as exc:  # a config diffusers cannot build
            raise WeightsError(f"MuseTalk UNet config: {cfg_path} does not build a UNet2DConditionModel: "
                               f"{exc}") from exc
        state = load_state(weights, what)
        check_keys(unet, state, what, weights)
        del state
        return self._finish(unet)

    def _load_vae(self, vae_dir: Path) -> Any:
        from diffusers import AutoencoderKL

        try:
            vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
        except Exception as exc:  # missing or mismatched tensors, unreadable file
            raise WeightsError(f"MuseTalk VAE: could not load {vae_dir} (expected {VAE_SOURCE}): "
                               f"{exc}") from exc
        return self._finish(vae)

    def _load_whisper(self, whisper_dir: Path) -> tuple[Any, Any]:
        from transformers import WhisperFeatureExtractor, WhisperModel

        what = "MuseTalk whisper"
        try:
            model, info = WhisperModel.from_pretrained(whisper_dir, local_files_only=True,
                                                       output_loading_info=True)
            features = WhisperFeatureExtractor.from_pretrained(whisper_dir, local_files_only=True)
        except Exception as exc:
            raise WeightsError(f"{what}: could not load {whisper_dir} (expected {WHISPER_SOURCE}): "
                               f"{exc}") from exc
        missing = [k for k in info.get("missing_keys", ()) if k.startswith("encoder.")]
        mismatched = [str(k) for k in info.get("mismatched_keys", ())]
        if missing or mismatched:
            raise WeightsError(f"{what}: the weights in {whisper_dir} do not match whisper-tiny's encoder: "
                               f"missing {missing[:3]}, mismatched {mismatched[:3]}")
        bad = _mismatch({k: getattr(features, k, None) for k in ("feature_size", "sampling_rate",
                                                                  "hop_length", "n_samples")},
                        {"feature_size": 80, "sampling_rate": SPEECH_RATE,
                         "hop_length": SAMPLES_PER_STEP // 2, "n_samples": MAX_SEGMENT_SAMPLES}, {})
        if bad:
            raise WeightsError(f"{what}: {whisper_dir / 'preprocessor_config.json'} is not whisper's "
                               f"feature extractor: {', '.join(bad)}")
        encoder = model.encoder  # the decoder is never used: dropped with `model`
        del model
        return self._finish(encoder), features

    # -- reference frames -------------------------------------------------------------------------

    def encode_reference(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) uint8 BGR face crops -> (N, 8, 32, 32) float32 UNet inputs: the latent of
        the crop with its lower half blanked, then the latent of the whole crop.

        MuseTalk samples the VAE's latent distribution; this takes its mean (``.mode()``), so that
        an avatar prepared twice gives the same latents (the sampling noise is ~1e-3 of the signal).
        """
        import torch

        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[1:] != (SIZE, SIZE, 3) or crops.dtype != np.uint8:
            raise ValueError(f"face crops must be (N, {SIZE}, {SIZE}, 3) uint8, got {crops.shape} {crops.dtype}")
        out = np.empty((len(crops), 2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), ENCODE_BATCH):
                x = torch.from_numpy(np.ascontiguousarray(crops[start:start + ENCODE_BATCH])).to(self.device)
                x = x.flip(-1).permute(0, 3, 1, 2).float() / 255.0  # RGB in [0, 1]
                masked = x.clone()
                masked[:, :, SIZE // 2:, :] = 0.0  # blanked before normalising, as MuseTalk does
                both = ((torch.cat([masked, x]) - 0.5) / 0.5).to(self.dtype)
                lat = self._vae.encode(both).latent_dist.mode() * self.scaling_factor
                n = x.shape[0]
                out[start:start + n] = torch.cat([lat[:n], lat[n:]], dim=1).float().cpu().numpy()
        return out

    # -- audio ------------------------------------------------------------------------------------

    def audio_prompts(self, segment: np.ndarray, *, offset: int, first_frame: int, n_frames: int) -> np.ndarray:
        """Audio tokens (n_frames, 50, 384) float32 for the reply's video frames
        ``first_frame .. first_frame + n_frames - 1`` (counted from the reply start).

        ``segment`` is 16 kHz mono reply audio holding the reply's samples ``offset ..
        offset + len(segment)``, at most 30 s; ``offset`` must fall on a whisper step (a multiple of
        320 samples). Steps before the reply start or past the segment's end are zeros, as MuseTalk
        pads the whole utterance; steps inside the reply but before the segment are an error (start
        the segment ``CONTEXT_FRAMES`` earlier).

        Whisper only sees the segment (padded with silence to 30 s), so the features differ a
        little from those of the whole utterance: its attention spans the whole input and the
        log-mel range is clamped relative to the segment's loudest frame. Give ``CONTEXT_FRAMES``
        before and ``LOOKAHEAD_FRAMES`` after the frames wanted.
        """
        return self.audio_prompts_batch([(segment, offset, first_frame, n_frames)])[0]

    def audio_prompts_batch(self, requests: list[tuple[np.ndarray, int, int, int]]) -> list[np.ndarray]:
        """:meth:`audio_prompts` for several ``(segment, offset, first_frame, n_frames)`` requests
        (e.g. one per session) with one whisper encoder call."""
        import torch

        checked = [self._check_request(*r) for r in requests]
        run = [i for i, r in enumerate(checked) if len(r.segment) and r.valid.any()]
        out = [np.zeros((len(r.steps), PROMPT_TOKENS, FEATURE_DIM), dtype=np.float32) for r in checked]
        if not run:
            return out
        mel = self._features([checked[i].segment for i in run], sampling_rate=SPEECH_RATE,
                             return_tensors="np", device=self.device).input_features
        with torch.inference_mode():
            mel_t = torch.from_numpy(mel).to(self.device, self.dtype)
            hidden = self._whisper(mel_t, output_hidden_states=True).hidden_states
            if len(hidden) != HIDDEN_STATES:
                raise RuntimeError(f"whisper gave {len(hidden)} hidden states, MuseTalk needs {HIDDEN_STATES}")
            feats = torch.stack(hidden, dim=2)  # (B, 1500, 5, 384)
            for row, i in enumerate(run):
                r = checked[i]
                idx = torch.from_numpy(np.where(r.valid, r.local, 0)).to(self.device)
                keep = torch.from_numpy(r.valid).to(self.device, feats.dtype)
                picked = feats[row][idx] * keep[:, :, None, None]  # (n, 10, 5, 384)
                out[i] = picked.reshape(len(r.steps), PROMPT_TOKENS, FEATURE_DIM).float().cpu().numpy()
        return out

    @staticmethod
    def _check_request(segment: np.ndarray, offset: int, first_frame: int, n_frames: int) -> _Request:
        seg = np.asarray(segment, dtype=np.float32)
        if seg.ndim != 1:
            raise ValueError(f"the audio segment must be mono (1-D), got shape {seg.shape}")
        if len(seg) > MAX_SEGMENT_SAMPLES:
            raise ValueError(f"the audio segment is {len(seg) / SPEECH_RATE:.2f} s; whisper takes at most "
                             f"{MAX_SEGMENT_SAMPLES // SPEECH_RATE} s ({MAX_SEGMENT_SAMPLES} samples)")
        if offset < 0 or offset % SAMPLES_PER_STEP:
            raise ValueError(f"offset {offset} must be a non-negative multiple of {SAMPLES_PER_STEP} samples "
                             f"(one 20 ms whisper step)")
        if first_frame < 0 or n_frames < 0:
            raise ValueError(f"first_frame ({first_frame}) and n_frames ({n_frames}) must be >= 0")
        frames = np.arange(first_frame, first_frame + n_frames, dtype=np.int64)
        steps = (frames[:, None] * AUDIO_STEPS_PER_FRAME - PAD_STEPS
                 + np.arange(WINDOW_STEPS, dtype=np.int64)[None, :])
        local = steps - offset // SAMPLES_PER_STEP
        early = (steps >= 0) & (local < 0)
        if early.any():
            raise ValueError(f"frame {first_frame} needs audio from sample {int(steps[early].min()) * SAMPLES_PER_STEP}"
                             f" but the segment starts at {offset}; start it at least {WINDOW_FRAMES} frames "
                             f"(better {CONTEXT_FRAMES}) before the first frame")
        valid = (steps >= 0) & (local < len(seg) // SAMPLES_PER_STEP)
        return _Request(seg, steps, local, valid)

    # -- generation -------------------------------------------------------------------------------

    def _render(self, latents: np.ndarray, prompts: np.ndarray) -> Any:
        """(B, 3, 256, 256) float32 RGB in [0, 1] on the device (call under inference_mode)."""
        import torch

        lat = torch.from_numpy(np.ascontiguousarray(latents)).to(self.device, self.dtype)
        cond = (torch.from_numpy(np.ascontiguousarray(prompts, dtype=np.float32)).to(self.device)
                + self._pe).to(self.dtype)
        pred = self._unet(lat, self._t0, encoder_hidden_states=cond, return_dict=False)[0]
        img = self._vae.decode(pred / self.scaling_factor, return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    def generate(self, latents: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """(B, 8, 32, 32) reference latents and (B, 50, 384) audio tokens -> (B, 256, 256, 3) uint8
        BGR faces; one UNet and one VAE decode call for the whole batch."""
        import torch

        latents, prompts = np.asarray(latents), np.asarray(prompts)
        want_l = (2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
        if latents.ndim != 4 or latents.shape[1:] != want_l:
            raise ValueError(f"latents must be (B, {', '.join(map(str, want_l))}), got {latents.shape}")
        if prompts.shape != (len(latents), PROMPT_TOKENS, FEATURE_DIM):
            raise ValueError(f"prompts must be ({len(latents)}, {PROMPT_TOKENS}, {FEATURE_DIM}), "
                             f"got {prompts.shape}")
        if not len(latents):
            return np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
        with torch.inference_mode():
            img = (self._render(latents, prompts) * 255).round().to(torch.uint8)
            return img.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()


# -- random weights for tests and benchmarks ------------------------------------------------------

def _unet_config(tiny: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
        "cross_attention_dim": FEATURE_DIM,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
        "in_channels": 2 * LATENT_CHANNELS, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": LATENT_CHANNELS, "sample_size": 64,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    }
    if tiny:
        cfg.update(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                   norm_num_groups=8, sample_size=LATENT_SIZE)
    return cfg


def _vae_config(tiny: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": LATENT_CHANNELS,
        "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
        "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4,
    }
    if tiny:  # still 4 blocks, 3 downsamples: 256 -> 32
        cfg.update(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8)
    return cfg


def _whisper_config(tiny: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {  # openai/whisper-tiny
        "architectures": ["WhisperForConditionalGeneration"], "activation_function": "gelu",
        "d_model": FEATURE_DIM, "encoder_layers": HIDDEN_STATES - 1, "encoder_attention_heads": 6,
        "encoder_ffn_dim": 1536, "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536,
        "num_mel_bins": 80, "max_source_positions": WHISPER_STEPS, "max_target_positions": 448,
        "vocab_size": 51865, "bos_token_id": 50257, "eos_token_id": 50257, "pad_token_id": 50257,
        "decoder_start_token_id": 50258, "begin_suppress_tokens": [220, 50257], "scale_embedding": False,
    }
    if tiny:  # the encoder keeps its width and depth; the unused decoder shrinks
        cfg.update(encoder_ffn_dim=256, decoder_layers=1, decoder_ffn_dim=64, max_target_positions=16,
                   vocab_size=64, bos_token_id=1, eos_token_id=1, pad_token_id=1, decoder_start_token_id=2,
                   begin_suppress_tokens=None)
    return cfg


def write_random_weights(models_dir: str | Path, *, tiny: bool = True, seed: int = 0) -> MuseTalkPaths:
    """The official layout under ``models_dir`` with randomly initialised models, for tests and
    speed benchmarks. ``tiny`` shrinks the UNet and VAE (same inputs and outputs) and whisper's
    unused decoder; ``tiny=False`` writes full-size MuseTalk 1.5, sd-vae-ft-mse and whisper-tiny
    (about 3.5 GB, mostly the UNet). The faces it draws are noise."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    paths = MuseTalkPaths.from_models_dir(models_dir)
    paths.unet_config.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_cfg = _unet_config(tiny)
        paths.unet_config.write_text(json.dumps(unet_cfg, indent=2) + "\n")
        torch.save(UNet2DConditionModel.from_config(unet_cfg).state_dict(), paths.unet_weights)
        AutoencoderKL.from_config(_vae_config(tiny)).save_pretrained(paths.vae_dir)
        whisper = WhisperForConditionalGeneration(WhisperConfig(**_whisper_config(tiny)))
        whisper.save_pretrained(paths.whisper_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(paths.whisper_dir)
    return paths
