"""The MuseTalk 1.5 wrapper on tiny randomly initialised models in the official layout (no downloads)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.engines.lipsync.neural import musetalk as mt
from serve_app.engines.lipsync.neural.musetalk import (
    FEATURE_DIM,
    PROMPT_TOKENS,
    SIZE,
    MuseTalk,
    MuseTalkPaths,
    write_random_weights,
)
from serve_app.engines.lipsync.neural.weights import WeightsError

torch.set_num_threads(1)
RNG = np.random.default_rng(7)


def speechish(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a syllable-rate envelope, 16 kHz float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / 16000 + seed)
    return (0.2 * env * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> MuseTalkPaths:
    return write_random_weights(tmp_path_factory.mktemp("musetalk") / "models", tiny=True, seed=0)


@pytest.fixture(scope="module")
def model(paths) -> MuseTalk:
    return MuseTalk(paths, device="cpu")


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return RNG.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def latents(model, crops) -> np.ndarray:
    return model.encode_reference(crops)


# -- loading --------------------------------------------------------------------------------------

def test_loads_the_official_layout(paths, model):
    root = paths.unet_config.parent.parent
    assert paths == MuseTalkPaths.from_models_dir(root)
    assert paths.unet_config == root / "musetalkV15" / "musetalk.json"
    assert paths.unet_weights == root / "musetalkV15" / "unet.pth"
    assert paths.vae_dir == root / "sd-vae" and paths.whisper_dir == root / "whisper"
    assert (paths.whisper_dir / "preprocessor_config.json").is_file()
    # unet.pth is a plain state dict, as torch.save(unet.state_dict()) writes it
    state = torch.load(paths.unet_weights, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state["conv_in.weight"].shape[1] == 8
    assert model.device == "cpu" and model.dtype == torch.float32
    assert model.scaling_factor == pytest.approx(0.18215)
    for m in (model._unet, model._vae, model._whisper):
        assert not m.training
        assert not any(p.requires_grad for p in m.parameters())


def test_real_configs_build_musetalk_shapes():
    """tiny=False configs, built without memory on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(mt._unet_config(tiny=False))
        vae = AutoencoderKL.from_config(mt._vae_config(tiny=False))
        whisper = WhisperForConditionalGeneration(WhisperConfig(**mt._whisper_config(tiny=False)))
    state = unet.state_dict()
    assert state["conv_in.weight"].shape == (320, 8, 3, 3)
    assert state["conv_out.weight"].shape == (4, 320, 3, 3)
    assert state["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 384)
    assert 7e8 < sum(p.numel() for p in unet.parameters()) < 1e9
    assert vae.state_dict()["quant_conv.weight"].shape == (8, 8, 1, 1)
    assert vae.config.block_out_channels == [128, 256, 512, 512] and vae.config.scaling_factor == 0.18215
    enc = whisper.model.encoder
    assert enc.conv1.weight.shape == (384, 80, 3) and len(enc.layers) == 4
    assert 3.5e7 < sum(p.numel() for p in whisper.parameters()) < 4.2e7  # whisper-tiny: 37.8 M


# -- reference latents ----------------------------------------------------------------------------

def test_encode_reference(model, crops, latents):
    assert latents.shape == (3, 8, 32, 32) and latents.dtype == np.float32
    assert np.isfinite(latents).all()
    assert np.abs(latents[:, :4] - latents[:, 4:]).mean() > 1e-3  # masked half differs from ref half
    # the masked latent ignores the lower half of the face; the reference latent does not
    other = crops[:1].copy()
    other[:, SIZE // 2:] = 255 - other[:, SIZE // 2:]
    lat = model.encode_reference(other)
    np.testing.assert_allclose(lat[0, :4], latents[0, :4], atol=1e-5)
    assert np.abs(lat[0, 4:] - latents[0, 4:]).mean() > 1e-3


def test_encode_reference_matches_musetalk_preprocessing(model, crops, latents):
    rgb = crops[1, :, :, ::-1].astype(np.float32) / 255.0
    masked = rgb.copy()
    masked[SIZE // 2:] = 0
    x = torch.from_numpy(np.stack([masked, rgb])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        lat = model._vae.encode((x - 0.5) / 0.5).latent_dist.mode() * 0.18215
    np.testing.assert_allclose(latents[1], torch.cat([lat[0], lat[1]]).numpy(), atol=1e-5)


def test_encode_reference_rejects_other_sizes(model):
    with pytest.raises(ValueError, match="256"):
        model.encode_reference(np.zeros((1, 128, 128, 3), np.uint8))


# -- generation -----------------------------------------------------------------------------------

def test_positional_encoding_matches_formula(model):
    pos = np.arange(PROMPT_TOKENS, dtype=np.float64)[:, None]
    dims = np.arange(FEATURE_DIM)[None, :]
    angle = pos / 10000.0 ** ((dims - dims % 2) / FEATURE_DIM)
    expected = np.where(dims % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(model._pe.cpu().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(mt.positional_encoding(), expected, atol=1e-6)


def test_generate(model, latents):
    prompts = RNG.standard_normal((3, PROMPT_TOKENS, FEATURE_DIM)).astype(np.float32)
    out = model.generate(latents, prompts)
    assert out.shape == (3, SIZE, SIZE, 3) and out.dtype == np.uint8
    assert out.std() > 5 and len(np.unique(out)) > 50
    assert model.generate(latents[:0], prompts[:0]).shape == (0, SIZE, SIZE, 3)
    with pytest.raises(ValueError):
        model.generate(latents, prompts[:2])


def test_generate_is_musetalks_single_step(model, latents):
    """UNet(latents, t=0, tokens + PE) then VAE decode, RGB -> BGR, as MuseTalk's inference does."""
    prompts = RNG.standard_normal((2, PROMPT_TOKENS, FEATURE_DIM)).astype(np.float32)
    pe = torch.from_numpy(mt.positional_encoding())
    with torch.inference_mode():
        pred = model._unet(torch.from_numpy(latents[:2]), torch.tensor([0]),
                           encoder_hidden_states=torch.from_numpy(prompts) + pe).sample
        img = model._vae.decode(pred / 0.18215).sample
    img = ((img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)[..., ::-1]
    out = model.generate(latents[:2], prompts)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1


def test_generate_batch_equals_single_calls(model, latents):
    prompts = RNG.standard_normal((3, PROMPT_TOKENS, FEATURE_DIM)).astype(np.float32)
    with torch.inference_mode():
        batch = model._render(latents, prompts).numpy()
        singles = np.concatenate([model._render(latents[i:i + 1], prompts[i:i + 1]).numpy() for i in range(3)])
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    out = model.generate(latents, prompts)
    one = np.concatenate([model.generate(latents[i:i + 1], prompts[i:i + 1]) for i in range(3)])
    assert np.abs(out.astype(int) - one.astype(int)).max() <= 1


# -- audio ----------------------------------------------------------------------------------------

def musetalk_chunks(model: MuseTalk, audio: np.ndarray) -> np.ndarray:
    """MuseTalk 1.5's AudioProcessor.get_whisper_chunk (one 30 s segment, 25 fps), re-stated."""
    mel = model._features(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        feats = torch.stack(model._whisper(mel, output_hidden_states=True).hidden_states, dim=2)
    n_frames = math.floor(len(audio) / 16000 * 25)
    feats = feats[:, :math.floor(len(audio) / 16000 * 50)]
    feats = torch.cat([torch.zeros_like(feats[:, :2 * 2]), feats, torch.zeros_like(feats[:, :2 * 3 * 2])], 1)
    clips = [feats[:, math.floor(i * 2):math.floor(i * 2) + 10] for i in range(n_frames)]
    return torch.cat(clips).reshape(n_frames, 10 * 5, 384).numpy()


def test_whisper_hidden_states_are_musetalks(model):
    """embeddings, layers 1-3, then layer 4 after the final layer norm (as transformers 4.x gave)."""
    enc = model._whisper
    mel = torch.from_numpy(model._features(speechish(1.0), sampling_rate=16000,
                                           return_tensors="np").input_features)
    with torch.inference_mode():
        out = enc(mel, output_hidden_states=True)
        h = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(mel)))).permute(0, 2, 1)
        h = h + enc.embed_positions.weight
        expected = [h]
        for layer in enc.layers:
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
            expected.append(h)
        expected[-1] = enc.layer_norm(h)
    assert len(out.hidden_states) == 5
    for got, want in zip(out.hidden_states, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_audio_prompts_match_musetalk(model):
    audio = speechish(2.0, seed=1)
    ref = musetalk_chunks(model, audio)
    got = model.audio_prompts(audio, offset=0, first_frame=0, n_frames=len(ref))
    assert got.shape == (50, PROMPT_TOKENS, FEATURE_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_audio_prompts_zero_outside_the_reply(model):
    audio = speechish(1.0, seed=2)  # 50 whisper steps
    got = model.audio_prompts(audio, offset=0, first_frame=0, n_frames=25)
    rows = np.abs(got).sum(axis=2)  # (frames, 50 tokens); token = step * 5 + layer
    assert (rows[0, :20] == 0).all() and (rows[0, 20:] > 0).all()  # frame 0: steps -4..-1 are zero
    assert (rows[1, :10] == 0).all() and (rows[1, 10:] > 0).all()  # frame 1: steps -2, -1
    assert (rows[2] > 0).all()
    assert (rows[24, 30:] == 0).all() and (rows[24, :30] > 0).all()  # frame 24: steps 50..53 past the end
    beyond = model.audio_prompts(audio, offset=0, first_frame=40, n_frames=2)
    assert beyond.shape == (2, 50, 384) and not beyond.any()
    assert model.audio_prompts(audio, offset=0, first_frame=3, n_frames=0).shape == (0, 50, 384)


def test_audio_prompts_map_global_frames(model):
    audio = speechish(3.0, seed=3)
    offset = 24 * 640  # the segment starts at frame 24 (step 48) of the reply
    seg = audio[offset:offset + 32000]
    got = model.audio_prompts(seg, offset=offset, first_frame=30, n_frames=10)
    local = model.audio_prompts(seg, offset=0, first_frame=6, n_frames=10)
    np.testing.assert_array_equal(got, local)
    # a step-aligned (not frame-aligned) offset: frame 30 reads local steps 7..16 of the segment,
    # MuseTalk's frame 6 of the same audio local steps 8..17
    odd = model.audio_prompts(seg[320:], offset=offset + 320, first_frame=30, n_frames=1)
    full = musetalk_chunks(model, seg[320:])
    np.testing.assert_allclose(odd[0, 5:], full[6, :45], atol=1e-5)
    # inside the reply but before the segment: the caller forgot the context
    with pytest.raises(ValueError, match="before the first frame"):
        model.audio_prompts(seg, offset=offset, first_frame=25, n_frames=2)


def test_audio_prompts_batch_equals_separate_calls(model):
    a, b, c = speechish(2.0, seed=4), speechish(4.0, seed=5), speechish(0.6, seed=6)
    requests = [(a, 0, 0, 20), (b[6400:], 6400, 14, 30), (c, 640 * 5, 9, 6), (a[:0], 0, 0, 3)]
    batch = model.audio_prompts_batch(requests)
    assert len(batch) == 4
    for (seg, offset, first, n), got in zip(requests, batch):
        want = model.audio_prompts(seg, offset=offset, first_frame=first, n_frames=n)
        assert got.shape == (n, 50, 384)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not batch[3].any()
    assert model.audio_prompts_batch([]) == []


def test_audio_prompts_bad_arguments(model):
    with pytest.raises(ValueError, match="multiple of 320"):
        model.audio_prompts(speechish(0.5), offset=100, first_frame=0, n_frames=1)
    with pytest.raises(ValueError, match="30 s"):
        model.audio_prompts(np.zeros(30 * 16000 + 1, np.float32), offset=0, first_frame=0, n_frames=1)
    with pytest.raises(ValueError, match="mono"):
        model.audio_prompts(np.zeros((2, 1000), np.float32), offset=0, first_frame=0, n_frames=1)


def test_lookahead_and_context_cover_the_window():
    # Frame i (from sample 640i) reads whisper steps 2i-4 .. 2i+5; step s comes from mel frames
    # 2s-2 .. 2s+2, each a 400-sample window centred on sample 160 * frame.
    reach = 160 * (2 * 5 + 2) + 200  # past sample 640i: 2120 (t_i + 132.5 ms)
    back = 160 * (2 * 4 + 2) + 200   # before sample 640i: 1800
    assert (mt.LOOKAHEAD_FRAMES - 1) * 640 < reach <= mt.LOOKAHEAD_FRAMES * 640
    assert mt.CONTEXT_FRAMES * 640 >= back
    assert mt.SAMPLES_PER_STEP == 320 and mt.AUDIO_STEPS_PER_FRAME == 2


# -- bad layouts ----------------------------------------------------------------------------------

@pytest.fixture
def layout(paths, tmp_path) -> MuseTalkPaths:
    """A private copy of the good layout to break."""
    root = tmp_path / "models"
    shutil.copytree(paths.unet_config.parent.parent, root)
    return MuseTalkPaths.from_models_dir(root)


def edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_missing_unet_weights(layout):
    layout.unet_weights.unlink()
    with pytest.raises(WeightsError) as err:
        MuseTalk(layout, device="cpu")
    assert str(layout.unet_weights) in str(err.value) and "TMElyralab/MuseTalk" in str(err.value)
    assert "musetalk.json" in str(err.value)  # what the folder holds instead


def test_unet_config_not_musetalks(layout):
    edit_json(layout.unet_config, in_channels=4)
    with pytest.raises(WeightsError, match="in_channels 4 .expected 8."):
        MuseTalk(layout, device="cpu")


def test_unet_weights_from_another_config(layout):
    from diffusers import UNet2DConditionModel

    cfg = mt._unet_config(tiny=True)
    cfg["block_out_channels"] = [32, 96]
    torch.save(UNet2DConditionModel.from_config(cfg).state_dict(), layout.unet_weights)
    with pytest.raises(WeightsError, match="shape mismatches") as err:
        MuseTalk(layout, device="cpu")
    assert str(layout.unet_weights) in str(err.value)


def test_whisper_not_tiny(layout):
    edit_json(layout.whisper_dir / "config.json", d_model=512)
    with pytest.raises(WeightsError, match="d_model 512") as err:
        MuseTalk(layout, device="cpu")
    assert "openai/whisper-tiny" in str(err.value)


def test_whisper_config_missing(layout):
    (layout.whisper_dir / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json") as err:
        MuseTalk(layout, device="cpu")
    assert "openai/whisper-tiny" in str(err.value) and str(layout.whisper_dir) in str(err.value)


def test_whisper_weights_mismatched(layout):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = mt._whisper_config(tiny=True)
    cfg["encoder_ffn_dim"] = 128
    for f in layout.whisper_dir.glob("model*.safetensors"):
        f.unlink()
    WhisperForConditionalGeneration(WhisperConfig(**cfg)).save_pretrained(layout.whisper_dir)
    edit_json(layout.whisper_dir / "config.json", encoder_ffn_dim=256)
    with pytest.raises(WeightsError, match="whisper"):
        MuseTalk(layout, device="cpu")


def test_vae_missing(layout):
    shutil.rmtree(layout.vae_dir)
    with pytest.raises(WeightsError) as err:
        MuseTalk(layout, device="cpu")
    assert "stabilityai/sd-vae-ft-mse" in str(err.value) and str(layout.vae_dir) in str(err.value)


def test_vae_with_old_attention_key_names(layout, model, latents):
    """sd-vae-ft-mse's files predate diffusers' attention renames (query/key/value/proj_attn)."""
    from safetensors.torch import load_file, save_file

    path = layout.vae_dir / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for k, v in load_file(path).items():
        for new, was in old.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{was}.")
        state[k] = v
    assert any(".query." in k for k in state)
    save_file(state, path)
    loaded = MuseTalk(layout, device="cpu")
    prompts = RNG.standard_normal((1, PROMPT_TOKENS, FEATURE_DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.generate(latents[:1], prompts), model.generate(latents[:1], prompts))



def test_whisper_weights_missing_encoder_layers(layout):
    from safetensors.torch import load_file, save_file

    path = layout.whisper_dir / "model.safetensors"
    state = load_file(path)
    save_file({k: v for k, v in state.items() if "encoder.layers.3." not in k}, path, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="encoder.layers.3"):
        MuseTalk(layout, device="cpu")
