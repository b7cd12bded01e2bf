from __future__ import annotations

import numpy as np
import pytest
import torch

from serve_app.engines.lipsync.neural.wav2lip import (
    Wav2Lip,
    audio_batch,
    detect_variant,
    face_batch,
    frames_from_output,
    load_wav2lip,
    save_official_checkpoint,
)
from serve_app.engines.lipsync.neural.weights import WeightsError

torch.set_num_threads(1)


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so a load that dropped them would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def model96() -> Wav2Lip:
    torch.manual_seed(0)
    m = Wav2Lip("96")
    _randomise_bn(m)
    return m.eval()


@pytest.fixture(scope="module")
def model256() -> Wav2Lip:
    torch.manual_seed(1)
    return Wav2Lip("256").eval()


@pytest.fixture(scope="module")
def ckpt96(model96, tmp_path_factory):
    path = tmp_path_factory.mktemp("w2l") / "wav2lip.pth"
    save_official_checkpoint(model96, path)
    return path


def _inputs(size: int, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.rand(b, 1, 80, 16, generator=g) * 8 - 4
    faces = (torch.rand(b, size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    return audio, face_batch(faces)


@torch.no_grad()
def test_forward_96(model96):
    audio, face = _inputs(96, 2)
    out = model96(audio, face)
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert model96.size == 96 and model96.variant == "96"


@torch.no_grad()
def test_forward_256(model256):
    audio, face = _inputs(256, 1)
    out = model256(audio, face)
    assert out.shape == (1, 3, 256, 256)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert model256.size == 256 and model256.variant == "256"
    assert any(k.startswith("audio_refine.") for k in model256.state_dict())
    assert "sam.sa.conv1.weight" in model256.state_dict()


def test_wrong_input_shapes(model96):
    audio, face = _inputs(96, 1)
    with pytest.raises(ValueError, match="face"):
        model96(audio, torch.zeros(1, 6, 128, 128))
    with pytest.raises(ValueError, match="audio"):
        model96(torch.zeros(2, 1, 80, 16), face)
    with pytest.raises(ValueError):
        Wav2Lip("384")


def test_official_key_names(model96):
    keys = set(model96.state_dict())
    for k in ("face_encoder_blocks.0.0.conv_block.0.weight",
              "face_encoder_blocks.6.1.conv_block.1.running_var",
              "audio_encoder.12.conv_block.0.weight",
              "face_decoder_blocks.1.0.conv_block.0.weight",
              "face_decoder_blocks.6.2.conv_block.1.num_batches_tracked",
              "output_block.0.conv_block.0.weight", "output_block.1.weight", "output_block.1.bias"):
        assert k in keys, k
    assert not any(k.startswith(("face_encoder_blocks.7.", "sam.", "audio_refine.")) for k in keys)
    assert tuple(model96.state_dict()["face_decoder_blocks.1.0.conv_block.0.weight"].shape) == (1024, 512, 3, 3)


def test_detect_variant(model96, model256):
    assert detect_variant(model96.state_dict()) == "96"
    assert detect_variant(model256.state_dict()) == "256"
    prefixed = {"module." + k: v for k, v in model256.state_dict().items()}
    assert detect_variant({"state_dict": prefixed, "global_step": 3}) == "256"
    with pytest.raises(WeightsError, match="SyncNet"):
        detect_variant({"face_encoder.0.conv_block.0.weight": torch.zeros(1),
                        "audio_encoder.0.conv_block.0.weight": torch.zeros(1)})


@torch.no_grad()
def test_checkpoint_round_trip(model96, ckpt96):
    raw = torch.load(ckpt96, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert all(k.startswith("module.") for k in raw["state_dict"])
    loaded = load_wav2lip(ckpt96)
    assert loaded.variant == "96" and not loaded.training
    audio, face = _inputs(96, 2, seed=5)
    assert torch.equal(loaded(audio, face), model96(audio, face))


@torch.no_grad()
def test_checkpoint_round_trip_256(model256, tmp_path):
    path = tmp_path / "wav2lip256.pth"
    save_official_checkpoint(model256, path)
    loaded = load_wav2lip(path)
    assert loaded.variant == "256" and loaded.size == 256 and not loaded.training
    mine, theirs = model256.state_dict(), loaded.state_dict()  # (cheaper than two 256 forwards)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@torch.no_grad()
@pytest.mark.parametrize("prefix", ["", "module."])
def test_bare_state_dicts_accepted(model96, tmp_path, prefix):
    path = tmp_path / "bare.pth"
    torch.save({prefix + k: v for k, v in model96.state_dict().items()}, path)
    loaded = load_wav2lip(path)
    audio, face = _inputs(96, 1, seed=7)
    assert torch.equal(loaded(audio, face), model96(audio, face))


def test_unprefixed_official_layout_accepted(model96, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": model96.state_dict(), "global_step": 1}, path)
    assert load_wav2lip(path).variant == "96"


def test_shape_mismatch_rejected(model96, tmp_path):
    state = {k: v.clone() for k, v in model96.state_dict().items()}
    state["face_decoder_blocks.3.0.conv_block.0.weight"] = torch.zeros(768, 300, 3, 3)
    path = tmp_path / "bad_shape.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    with pytest.raises(WeightsError, match=r"shape mismatch.*face_decoder_blocks\.3\.0"):
        load_wav2lip(path)


def test_missing_keys_rejected(model96, tmp_path):
    state = {"module." + k: v for k, v in model96.state_dict().items() if not k.startswith("output_block.")}
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError, match=r"missing keys.*output_block"):
        load_wav2lip(path)


def test_syncnet_rejected(tmp_path):
    state = {"module.face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
             "module.audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3)}
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": state, "global_step": 0}, path)
    with pytest.raises(WeightsError, match="SyncNet") as info:
        load_wav2lip(path)
    assert str(path) in str(info.value)


def test_disc_qual_rejected(tmp_path):
    state = {"face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(32, 3, 7, 7),
             "binary_pred.0.weight": torch.zeros(1, 512, 1, 1)}
    path = tmp_path / "visual_disc.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError, match="discriminator"):
        load_wav2lip(path)


def test_non_dict_and_junk_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_wav2lip(path)
    path2 = tmp_path / "meta.pth"
    torch.save({"global_step": 3, "epoch": 1}, path2)
    with pytest.raises(WeightsError, match="state_dict"):
        load_wav2lip(path2)
    path3 = tmp_path / "junk.pth"
    path3.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not read"):
        load_wav2lip(path3)


def test_missing_file_names_expected_file(tmp_path):
    path = tmp_path / "models" / "wav2lip.pth"
    with pytest.raises(WeightsError) as info:
        load_wav2lip(path)
    msg = str(info.value)
    assert str(path) in msg and "wav2lip_gan.pth" in msg and "wav2lip256.pth" in msg


@torch.no_grad()
def test_batch_equals_single_calls(model96):
    audio, face = _inputs(96, 4, seed=11)
    batched = model96(audio, face)
    singles = torch.cat([model96(audio[i:i + 1], face[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)


def test_face_batch_masks_lower_half():
    rng = np.random.default_rng(0)
    faces = rng.integers(1, 256, size=(3, 96, 96, 3), dtype=np.uint8)
    x = face_batch(faces)
    assert x.shape == (3, 6, 96, 96) and x.dtype == torch.float32
    ref = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(x[:, 3:], ref)  # the reference, BGR order kept
    assert torch.equal(x[:, :3, :48], ref[:, :, :48])  # upper half untouched
    assert torch.all(x[:, :3, 48:] == 0)  # lower half blanked
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    with pytest.raises(ValueError):
        face_batch(faces[0])


def test_frames_from_output_round_trip():
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    pred = face_batch(faces)[:, 3:]
    np.testing.assert_array_equal(frames_from_output(pred), faces)
    out = frames_from_output(torch.tensor([-0.5, 0.6 / 255, 1.4 / 255, 2.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2))
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, :, :, 0].tolist() == [[0, 1], [1, 255]]


def test_audio_batch():
    w = np.zeros((5, 80, 16), dtype=np.float32)
    assert audio_batch(w).shape == (5, 1, 80, 16)
    with pytest.raises(ValueError):
        audio_batch(np.zeros((80, 16)))
