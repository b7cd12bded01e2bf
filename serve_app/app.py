"""build_app(args) -> the Serve application; serve_config.yaml points here.

Every deployment takes its resources from the backend profile (configs/cpu.yaml or
configs/gpu.yaml), so one YAML file decides what runs where.
"""
from __future__ import annotations

import os

from ray.serve import Application

from serve_app.config import load_profile
from serve_app.deployments.asr import ASRDeployment
from serve_app.deployments.avatar_jobs import AvatarJobsDeployment
from serve_app.deployments.lipsync import LipSyncDeployment
from serve_app.deployments.llm import LLMDeployment
from serve_app.deployments.renders import RendersDeployment
from serve_app.deployments.sessions import SessionManager
from serve_app.deployments.tts import TTSDeployment
from serve_app.ingress import Ingress

# Model hubs are unreachable by design: never let a library try to download at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_PROFILE = "configs/cpu.yaml"


def build_app(args: dict | None = None) -> Application:
    """args: `profile` (a profile file) and optional `overrides` laid over it (same nesting)."""
    args = args or {}
    profile = load_profile(args.get("profile", DEFAULT_PROFILE), args.get("overrides"))
    tts = TTSDeployment.options(**profile.tts.deployment.as_options()).bind(profile.tts)
    lipsync = LipSyncDeployment.options(**profile.lipsync.deployment.as_options()).bind(
        profile.lipsync.backend, profile.lipsync.options, profile.avatars_dir
    )
    asr = llm = None  # a realtime server hears and answers in their place
    if profile.conversation.backend == "pipeline":
        asr = ASRDeployment.options(**profile.asr.deployment.as_options()).bind(
            profile.asr.backend, profile.asr.options
        )
        llm = LLMDeployment.options(**profile.llm.deployment.as_options()).bind(
            profile.llm.backend, profile.llm.options
        )
    manager = SessionManager.options(**profile.session_manager.as_options()).bind(
        profile, tts, lipsync, asr, llm
    )
    jobs = AvatarJobsDeployment.options(**profile.avatars.jobs.as_options()).bind(
        profile.avatars_dir, profile.lipsync.backend, profile.lipsync.options, profile.avatars.job_time_limit_s
    )
    renders = RendersDeployment.options(**profile.renders.deployment.as_options()).bind(profile, tts, lipsync)
    return Ingress.options(**profile.ingress.as_options()).bind(profile, manager, lipsync, jobs, renders)
