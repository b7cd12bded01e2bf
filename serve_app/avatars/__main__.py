"""Command line: prepare a photo/video avatar, or list the avatars in a folder.

    python -m serve_app.avatars prepare SOURCE --id NAME [--name "Display"] [--avatars-dir DIR]
    python -m serve_app.avatars list [--avatars-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .prepare import AvatarError, prepare_avatar

STAGES = ("reading", "detecting", "writing", "encoding")  # "encoding": with --musetalk-models
BAR = 30


def _progress(stage: str, fraction: float) -> None:
    done = round(BAR * fraction)
    step = STAGES.index(stage) + 1
    sys.stderr.write(f"\r[{step}/{len(STAGES)}] {stage:<9} [{'#' * done}{'.' * (BAR - done)}] "
                     f"{fraction:4.0%}")
    if fraction >= 1:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.avatars")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="make an avatar from a photo or a short video of a face")
    p.add_argument("source", type=Path, help="image (png, jpg) or video (mp4, webm, mov)")
    p.add_argument("--id", required=True, help="the avatar's id: letters, digits, '_' and '-'")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="use at most this much video")
    p.add_argument("--avatars-dir", type=Path, default=Path("avatars"))
    p.add_argument("--musetalk-models", metavar="DIR",
                   help="also store MuseTalk reference latents, with the models in DIR "
                        "(musetalkV15/, sd-vae/, whisper/); needs the `neural` extra")
    ls = sub.add_parser("list", help="list the avatars the server can show")
    ls.add_argument("--avatars-dir", type=Path, default=Path("avatars"))
    args = parser.parse_args(argv)

    if args.command == "list":
        from serve_app.avatars.store import AvatarStore

        for a in AvatarStore(args.avatars_dir).list():
            print(f"{a['id']:<24} {a['kind']:<7} {a['size'][0]}x{a['size'][1]}  {a['name']}")
        return 0
    encoder = None
    if args.musetalk_models:  # loaded first: missing weights fail before any work is done
        try:
            from serve_app.engines.lipsync.neural.musetalk_engine import load_model
            from serve_app.engines.lipsync.neural.weights import WeightsError

            encoder = load_model(models_dir=args.musetalk_models).encode_reference
        except (ImportError, WeightsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        folder = prepare_avatar(args.source, args.id, args.avatars_dir, name=args.name,
                                max_seconds=args.max_seconds, progress=_progress, encoder=encoder)
    except AvatarError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncancelled; nothing was written", file=sys.stderr)
        return 130
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
