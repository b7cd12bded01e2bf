"""ASR benchmark: Whisper on a fitted encoder window vs the padded 30 s window.

    python bench/asr_window.py                 # 40 Piper-spoken sentences, both ways
    python bench/asr_window.py --threads 1

Each sentence is spoken by Piper (the bundled voice), resampled to 16 kHz and framed as the
session's VAD hands it on (0.2 s before the speech, 0.3 s after, a faint noise floor). Both
engines transcribe every clip; prints the word error rate (lower case, punctuation removed,
British/American spelling counted as errors) and the median / p95 time per clip, and writes
bench/results/asr_window-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import med, pct, print_machine, r, write_results  # noqa: E402

from serve_app.engines.asr.whisper import FasterWhisperASR  # noqa: E402
from serve_app.engines.audio import StreamResampler  # noqa: E402
from serve_app.engines.tts.piper_tts import PiperTTS  # noqa: E402

SENTENCES = [
    "Good morning, how did you sleep last night?",
    "Could you turn the lights off in the kitchen?",
    "I need to buy milk, eggs and bread on the way home.",
    "What is the weather going to be like tomorrow?",
    "The meeting has been moved to three o'clock on Thursday.",
    "Do you know a good place to eat near the station?",
    "Please remind me to call my mother this evening.",
    "How far is it from London to Edinburgh by train?",
    "I think the movie was too long but the music was great.",
    "Can you explain what a black hole is?",
    "My daughter starts school next week and she is very excited.",
    "Which planet is closest to the sun?",
    "Let's go for a walk in the park after lunch.",
    "The printer on the second floor is out of paper again.",
    "Why do cats sleep so much during the day?",
    "Is it going to rain this afternoon?",
    "I forgot my password and cannot log in to my account.",
    "What should I cook for dinner tonight?",
    "The train was delayed by twenty minutes because of the snow.",
    "Tell me a joke about computers.",
    "How do I change a flat tire on my bicycle?",
    "We are planning a surprise party for our friend on Saturday.",
    "Who wrote the play Romeo and Juliet?",
    "Please play some relaxing music.",
    "I would like to book a table for two at eight.",
    "How many languages are spoken in India?",
    "Could you help me write an email to my landlord?",
    "The coffee machine in the office is broken.",
    "What is the difference between a virus and a bacterium?",
    "Set an alarm for six thirty tomorrow morning.",
    "What is the capital of France?",
    "How are you today?",
    "What color is the sky?",
    "Okay, thank you very much.",
    "Sure, go ahead.",
    "That sounds good to me.",
    "Where did I put my keys?",
    "Stop talking.",
    "Actually, never mind.",
    "I don't understand what you mean.",
]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, b in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (a != b))
    return row[-1]


async def spoken(tts: PiperTTS, text: str, rng: np.random.Generator) -> np.ndarray:
    resampler, parts = None, []
    async for chunk in tts.stream(text):
        resampler = resampler or StreamResampler(chunk.sample_rate, 16000)
        parts.append(resampler.push(chunk.samples))
    parts.append(resampler.flush())
    x = np.concatenate(parts) * 0.7
    loud = np.flatnonzero(np.abs(x) > 0.003)
    x = np.concatenate([np.zeros(3200), x[loud[0] : loud[-1] + 1], np.zeros(4800)])
    return (x + rng.normal(0, 1e-4, len(x))).astype(np.float32)


def run(engine: FasterWhisperASR, clips: list[np.ndarray]) -> dict:
    times, errors, n_words, wrong = [], 0, 0, []
    for text, audio in zip(SENTENCES, clips):
        t0 = time.perf_counter()
        got = engine._transcribe(audio, "en").text
        times.append((time.perf_counter() - t0) * 1000)
        ref = words(text)
        e = edit_distance(ref, words(got))
        errors, n_words = errors + e, n_words + len(ref)
        if e:
            wrong.append({"said": text, "heard": got})
    return {"wer_pct": r(100 * errors / n_words, 2), "ms_p50": r(med(times)), "ms_p95": r(pct(times, 0.95)),
            "clips": len(clips), "words": n_words, "wrong": wrong}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 threads (the cpu profile uses 2)")
    args = ap.parse_args()
    machine, _ = print_machine()
    tts, rng = PiperTTS(), np.random.default_rng(0)
    clips = [await spoken(tts, s, rng) for s in SENTENCES]
    report = {"machine": machine, "threads": args.threads}
    for name, fitted in (("fitted window", True), ("30 s window", False)):
        result = run(FasterWhisperASR(cpu_threads=args.threads, fitted_window=fitted), clips)
        report[name] = result
        print(f"{name:>14}: WER {result['wer_pct']} % over {result['words']} words, "
              f"{result['ms_p50']} ms p50 / {result['ms_p95']} ms p95 per clip")
        for w in result["wrong"]:
            print(f"{'':>16}said {w['said']!r}, heard {w['heard']!r}")
    print("wrote", write_results("asr_window", report))


if __name__ == "__main__":
    asyncio.run(main())
