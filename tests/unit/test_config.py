"""Profiles and characters load, and bad files give errors that name the file and the field."""
from __future__ import annotations

import pytest

from serve_app.config import PROJECT_ROOT, ConfigError, load_characters, load_profile


@pytest.mark.parametrize("name", ["configs/cpu.yaml", "configs/gpu.yaml"])
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.avatars_dir == PROJECT_ROOT / "avatars"
    assert (profile.avatars_dir / profile.default_avatar / "manifest.json").is_file()
    assert profile.default_character in load_characters(profile.characters_dir)


def test_cpu_profile_fits_two_cores():
    profile = load_profile("configs/cpu.yaml")
    reserved = sum(
        opts.ray_actor_options.get("num_cpus", 1) * (opts.num_replicas or 1)
        for opts in (
            profile.asr.deployment, profile.llm.deployment, profile.tts.deployment,
            profile.lipsync.deployment, profile.ingress, profile.session_manager,
        )
    )
    reserved += profile.sessions.actor_num_cpus * (profile.sessions.max_sessions + profile.sessions.warm_pool)
    assert reserved <= 2


def test_gpu_profile_gives_models_fractional_gpus():
    profile = load_profile("configs/gpu.yaml")
    for stage in (profile.asr, profile.tts, profile.lipsync):
        assert 0 < stage.deployment.ray_actor_options["num_gpus"] < 1
        assert stage.deployment.autoscaling_config["max_replicas"] > 1


def test_unknown_field_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sessions:\n  max_sesions: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: sessions.max_sesions"):
        load_profile(bad)


def test_invalid_value_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sessions:\n  max_sessions: 0\n")
    with pytest.raises(ConfigError, match=r"sessions.max_sessions: Input should be greater than or equal to 1"):
        load_profile(bad)


def test_speculation_must_start_before_the_end_of_speech(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  end_silence_ms: 300\n  speculate_after_ms: 300\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: vad.*speculate_after_ms \(300\) must be below end_silence_ms"):
        load_profile(bad)
    off = tmp_path / "off.yaml"
    off.write_text("vad:\n  speculate_after_ms: 0\n")
    assert load_profile(off).vad.speculate_after_ms == 0


def test_missing_profile(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_profile(tmp_path / "nope.yaml")


def test_character_without_id(tmp_path):
    (tmp_path / "x.yaml").write_text("name: X\n")
    with pytest.raises(ConfigError, match=r"x.yaml: id: Field required"):
        load_characters(tmp_path)


def test_state_lives_in_a_private_folder_not_a_fixed_tmp_path(tmp_path, monkeypatch):
    import stat

    from serve_app.config import RenderSettings, StoreSettings, private_dir, state_dir

    monkeypatch.delenv("DH_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "digital-human"
    assert StoreSettings().path.parent == RenderSettings().folder.parent == state_dir()
    monkeypatch.setenv("DH_STATE_DIR", str(tmp_path / "mine"))
    assert StoreSettings().path == tmp_path / "mine" / "sessions.sqlite3"
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    for folder in (private_dir(tmp_path / "new" / "renders"), private_dir(loose)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
