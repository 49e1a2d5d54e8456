"""Checkpoint files: atomic writes, loading with clear errors, weights that must fit, a trained
model from a checkpoint, and RNG states.

Every write goes to a fresh temporary file in the same folder and is renamed over the target, so
a crash, a full disk or a read-only folder leaves the previous file whole and loadable. The rename
replaces a symlink at the target instead of writing through it.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from errors import CheckpointError
from arch import build_model, model_config
from trm import TRM

_UMASK = os.umask(0)  # read once: mkstemp makes 0600 files, checkpoints get the usual 0666 & ~umask
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[object], None], binary: bool = True) -> None:
    """write(f) into a temporary file next to path, then rename it to path. An OSError (disk full,
    read-only folder) becomes a CheckpointError naming path; the old file is untouched."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write ({e.strerror or e}); the previous file, if any, is "
                              f"unchanged") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text), binary=False)


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, make_hint: str = "python impl/train_trm.py (writes runs/<run_name>/best.pt)") -> dict:
    """The checkpoint dict (on CPU, weights_only); errors name the path and, when it is missing,
    the command that makes one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint there (train first: {make_hint})")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (best.pt or last.pt inside it?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file; report it as ours
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: checkpoint is corrupt or incomplete ({type(e).__name__}: {first_line})") from None


def load_weights(module: torch.nn.Module, state: dict, path: Path | str) -> None:
    """load_state_dict with an error that lists every missing, unexpected and mis-shaped key."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = ([f"missing: {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) + shapes
        raise CheckpointError(f"{path}: weights do not fit this model (a different architecture?):\n  "
                              + "\n  ".join(lines))
    module.load_state_dict(state)


TRAIN_COMMAND = "python impl/train_trm.py"


def dataset_of(ckpt: dict) -> dict:
    """The dataset metadata a checkpoint was trained on (older checkpoints held a Sudoku data_size)."""
    if "dataset" in ckpt:
        return ckpt["dataset"]
    size = ckpt["data_size"]
    return {"seq_len": size * size, "vocab_size": size + 2, "puzzle": "sudoku", "grid_size": size}


# What checkpoints written before a model key existed computed, where that is not today's default.
LEGACY_MODEL_CONFIG = {"mlp_t_norm": "hidden", "prefix_learned": "all"}


def load_trained(path: str | os.PathLike, device: torch.device) -> tuple[TRM, dict, str]:
    """A trained model of the saved model.arch (EMA weights when the checkpoint has them, in eval mode), the checkpoint
    dict (with "dataset" filled in for older ones), and which weights were used ("EMA" or "raw")."""
    ckpt = load_checkpoint(path, TRAIN_COMMAND)
    missing = [key for key in ("model", "model_config", "config") if key not in ckpt]
    if missing or not ("dataset" in ckpt or "data_size" in ckpt):
        raise CheckpointError(f"{path}: not a TRM training checkpoint (missing {', '.join(missing or ['dataset'])})")
    ckpt["dataset"] = dataset_of(ckpt)
    # Checkpoints from before model.mlp_t_norm and model.prefix_learned existed were trained with
    # the per-token mlp_t norm and every prefix position learned: keep them computing that.
    try:
        model = build_model(model_config({**LEGACY_MODEL_CONFIG, **ckpt["model_config"]}))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its model_config does not describe a model this code builds ({e})") from None
    use_ema = ckpt.get("ema") is not None
    weights = ckpt["ema"] if use_ema else ckpt["model"]
    # JEPA runs (train_trm_jepa.py) add a predictor beside the TRM; inference needs only the TRM.
    load_weights(model, {k: v for k, v in weights.items() if not k.startswith("predictor.")}, path)
    return model.to(device).eval(), ckpt, "EMA" if use_ema else "raw"


def rng_state() -> dict:
    """Global RNG states, in types that torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "gauss": gauss}}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
