"""Render a lip-synced MP4 from the command line, through a running server's render jobs.

    python -m serve_app.render --text "Welcome to the course." -o welcome.mp4
    python -m serve_app.render --audio lesson.wav --avatar teacher -o lesson.mp4
    python -m serve_app.render --url http://gpu-box:8000 --text-file script.txt -o out.mp4

Shows the job's progress (queued, synthesising, rendering, encoding) as a bar, then downloads
the file. Exit status 0 when the MP4 is written, 1 when the server refused or the job failed
(the message says why), 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

POLL_S = 0.5
BAR = 30


def progress_line(job: dict) -> str:
    percent = job.get("percent")
    filled = int(BAR * (percent or 0) / 100)
    bar = "#" * filled + "-" * (BAR - filled)
    shown = f"{percent:5.1f}%" if percent is not None else "   ..."
    return f"\r[{bar}] {shown} {job['state']:<12}"


def render(url: str, avatar: str, out: Path, text: str | None = None, audio: Path | None = None,
           voice: str | None = None, key: str | None = None, stream=sys.stderr) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
        if audio is not None:
            response = http.post("/api/renders", data={"avatar": avatar},
                                 files={"audio": (audio.name, audio.read_bytes(), "application/octet-stream")})
        else:
            response = http.post("/api/renders", json={"avatar": avatar, "text": text, "voice": voice})
        if response.status_code != 202:
            raise RenderError(f"the server refused the render ({response.status_code}): {detail(response)}")
        job = response.json()
        while job["state"] not in ("done", "failed", "cancelled"):
            stream.write(progress_line(job))
            stream.flush()
            time.sleep(POLL_S)
            job = http.get(job["status_url"]).json()
        stream.write(progress_line(job) + "\n")
        if job["state"] != "done":
            raise RenderError(f"the render {job['state']}: {job.get('error') or 'no reason given'}")
        partial = out.with_name(out.name + ".partial")
        with http.stream("GET", job["download_url"]) as download, open(partial, "wb") as f:
            if download.status_code != 200:
                raise RenderError(f"download failed ({download.status_code})")
            for chunk in download.iter_bytes():
                f.write(chunk)
        partial.rename(out)
        return job


class RenderError(Exception):
    pass


def detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="what the avatar says (with --voice, or the TTS's default voice)")
    what.add_argument("--text-file", type=Path, help="a UTF-8 file holding the text")
    what.add_argument("--audio", type=Path, help="an audio file to lip-sync (WAV, MP3, OGG, FLAC, M4A)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the MP4 to write")
    parser.add_argument("--avatar", default="default")
    parser.add_argument("--voice")
    parser.add_argument("--url", default=os.environ.get("DH_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key-env", default="DH_CREATE_KEY",
                        help="the variable holding the server's creation key, if it has one")
    args = parser.parse_args(argv)
    text = args.text_file.read_text() if args.text_file else args.text
    if args.audio is not None and not args.audio.is_file():
        parser.error(f"no audio file {args.audio}")
    try:
        job = render(args.url, args.avatar, args.output, text=text, audio=args.audio, voice=args.voice,
                     key=os.environ.get(args.key_env))
    except (RenderError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({job['bytes']} bytes, {job['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
