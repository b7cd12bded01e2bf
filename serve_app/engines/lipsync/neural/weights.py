"""Finding and reading the user's model files, with errors that say what to put where.

Nothing here downloads: a missing or mismatched file is reported with the path expected, where
the official file comes from, and what was actually found.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class WeightsError(RuntimeError):
    """A model file is missing or is not the checkpoint the engine expects."""


def _found(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    return f"{folder} holds: {shown}" if names else f"{folder} is empty"


def require_file(path: str | Path, what: str, source: str) -> Path:
    """`path` if it is a file; otherwise a WeightsError naming `what`, its `source` and what
    the folder holds instead."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{what}: expected the file {p} (get it from {source}); {_found(p)}")
    return p


def require_dir(path: str | Path, what: str, source: str, files: tuple[str, ...]) -> Path:
    """`path` if it is a folder holding `files` (any one of each `a|b` alternative)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise WeightsError(f"{what}: expected the folder {p} (get it from {source}); {_found(p)}")
    for name in files:
        options = name.split("|")
        if not any((p / o).is_file() for o in options):
            raise WeightsError(f"{what}: {p} has no {' or '.join(options)} "
                               f"(get the folder from {source}); {_found(p / options[0])}")
    return p


def load_state(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint as saved by torch.save (tensors only, never pickled code) or safetensors."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled objects, truncated download...
        raise WeightsError(f"{what}: could not read {path} as a PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state


def check_keys(model: Any, state: dict[str, Any], what: str, path: Path) -> None:
    """Load `state` into `model` strictly; a mismatch names the first keys and shapes that differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches, e.g. {', '.join(wrong[:2])}")
    if problems:
        raise WeightsError(f"{what}: {path} does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def pick_device(device: str = "auto") -> tuple[str, Any]:
    """(device, dtype): fp16 on a GPU, fp32 on the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, (torch.float16 if device.startswith("cuda") else torch.float32)
