"""Media timing shared by every stage and transport: defined here once.

One clock per session: video frame n is due at n * FRAME_S and carries exactly
OUTPUT_PER_FRAME samples of the reply's audio. Speech going into the models (VAD, ASR,
lip-sync) is mono SPEECH_RATE; what clients hear is mono OUTPUT_RATE.
"""
from __future__ import annotations

FPS = 25
FRAME_S = 1 / FPS
SPEECH_RATE = 16_000  # VAD, ASR and lip-sync input; WebSocket mic frames
OUTPUT_RATE = 48_000  # the reply audio clients hear (Opus's native rate)
SAMPLES_PER_FRAME = SPEECH_RATE // FPS  # 640 samples of 16 kHz audio per video frame
OUTPUT_PER_FRAME = OUTPUT_RATE // FPS  # 1920 samples: two 20 ms packets
