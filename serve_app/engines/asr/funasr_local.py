"""FunASR in process (Chinese: SenseVoiceSmall, Paraformer) from model directories on disk.

The model directories must be downloaded beforehand: FunASR given a missing directory takes it
for a ModelScope id, retries the download for about 22 s and then fails with a misleading
"not registered" error. So the directories are checked before funasr is even imported.
"""
from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .base import SAMPLE_RATE, ASRUnavailable, Transcript

# funasr.AutoModel loads config.yaml and the PyTorch weights model.pt; tokens, am.mvn, etc.
# are optional by model and found by FunASR next to them.
_REQUIRED = ("config.yaml", "model.pt")
_ONNX_WEIGHTS = ("model.onnx", "model_quant.onnx")
_INSTALL = "pip install funasr torch==2.13.0  (a plain `torch` pulls several GB of CUDA wheels)"

# ModelScope models that fit each role; the user downloads one beforehand, e.g. with
# `modelscope download --model iic/SenseVoiceSmall --local_dir models/SenseVoiceSmall`.
_WHERE = {
    "model": "iic/SenseVoiceSmall or "
    "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
    "vad_model": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
    "punc_model": "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
}

# SenseVoice prefixes its text with tags: language, emotion, audio event, ITN, e.g.
# "<|zh|><|NEUTRAL|><|Speech|><|withitn|>".
_TAG = re.compile(r"<\|([^|]*)\|>")
_LANGUAGES = {"zh", "en", "yue", "ja", "ko"}


def check_model_dir(path: str | Path, role: str = "model") -> Path:
    """The directory, if it holds what funasr.AutoModel needs; else ASRUnavailable saying what
    is missing and where to get it."""
    path = Path(path).expanduser()
    get_it = (
        f"download the ModelScope model {_WHERE[role]} beforehand (e.g. `modelscope download "
        f"--model <id> --local_dir <dir>` on a machine with network) and pass its directory"
    )
    if not path.is_dir():
        raise ASRUnavailable(
            f"FunASR {role} directory not found: {path} (it must hold {', '.join(_REQUIRED)}); "
            f"{get_it}"
        )
    missing = [f for f in _REQUIRED if not (path / f).is_file()]
    if missing:
        onnx_only = "model.pt" in missing and any((path / f).is_file() for f in _ONNX_WEIGHTS)
        hint = (
            " (it is an ONNX export, which funasr.AutoModel cannot load: serve it with the "
            "FunASR runtime and use the funasr_server backend, or give the PyTorch model)"
            if onnx_only
            else ""
        )
        raise ASRUnavailable(
            f"FunASR {role} directory {path} lacks {', '.join(missing)}{hint}; {get_it}"
        )
    return path


def clean_text(text: str) -> tuple[str, str | None]:
    """Text without SenseVoice's tags, and the language its tag names, if any."""
    language = next((t for t in _TAG.findall(text) if t in _LANGUAGES), None)
    return _TAG.sub("", text).strip(), language


class FunASRLocal:
    """An ASREngine on funasr.AutoModel with local model directories."""

    def __init__(
        self,
        model_dir: str,
        vad_model_dir: str | None = None,
        punc_model_dir: str | None = None,
        device: str = "cpu",
        ncpu: int = 1,
    ) -> None:
        options: dict[str, Any] = {"model": str(check_model_dir(model_dir))}
        if vad_model_dir is not None:
            options["vad_model"] = str(check_model_dir(vad_model_dir, "vad_model"))
        if punc_model_dir is not None:
            options["punc_model"] = str(check_model_dir(punc_model_dir, "punc_model"))
        try:
            from funasr import AutoModel
        except ImportError as e:
            raise ASRUnavailable(f"The FunASR engine needs funasr and torch: {_INSTALL}") from e
        # disable_update: no version check over the network. ncpu sets torch's thread count for
        # the whole process (FunASR's default of 4 oversubscribes a small machine).
        self._model = AutoModel(
            **options,
            device=device,
            ncpu=ncpu,
            disable_update=True,
            disable_pbar=True,
            log_level="ERROR",
        )
        # generate() merges each call's options into the model's shared config: one at a time.
        self._lock = threading.Lock()

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 mono 16 kHz audio in a worker thread."""
        return await asyncio.to_thread(self._transcribe, audio, language)

    def _transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        # A writable copy: arrays from Ray arrive read-only, and FunASR hands them to torch.
        audio = np.array(audio, dtype=np.float32).reshape(-1)
        # language and use_itn are SenseVoice options; Paraformer ignores them.
        with self._lock:
            results = self._model.generate(
                input=audio, fs=SAMPLE_RATE, language=language or "auto", use_itn=True
            )
        text, detected = clean_text("".join(r.get("text", "") for r in results))
        return Transcript(
            text=text, language=detected or language, duration_s=len(audio) / SAMPLE_RATE
        )
