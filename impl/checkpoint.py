"""Checkpoint files: atomic writes, loading with clear errors, weights that must fit, a trained
model from a checkpoint, and RNG states.

Every write goes to a fresh temporary file in the same folder and is renamed over the target, so
a crash, a full disk or a read-only folder leaves the previous file whole and loadable. The rename
replaces a symlink at the target instead of writing through it.

Every script loads a checkpoint through load_checkpoint, which checks that the file holds what its
caller reads (needs="resume": everything run_state.RunState.load_state_dict reads; "evaluate": the
weights, model_config, config and dataset) before anything uses it; load_trained then checks the
model_config's keys, types and size (against the machine's memory) before it builds the model.
"""
from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from errors import CheckpointError
from arch import build_model, model_class, model_config, upgrade
from config import type_name
from device import inference_memory, machine_memory
from trm import TRM, TRMConfig

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
    """torch.save(state) to path, atomically (write_atomic)."""
    def write(f) -> None:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # a short write (a full disk) reaches torch's zip writer as "unexpected pos"
            raise CheckpointError(f"{path}: cannot write ({first_line(e)}): disk full? The previous file, if any, "
                                  f"is unchanged") from None
    write_atomic(path, write)


def first_line(e: BaseException) -> str:
    """The exception's type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_checkpoint(path: str | os.PathLike, make_hint: str = "python impl/train_trm.py (writes runs/<run_name>/best.pt)",
                    needs: str = "") -> dict:
    """The checkpoint dict (on CPU, weights_only), checked by check_contents for what `needs`
    ("resume", "evaluate" or "") reads; errors name the path and, when it is missing, the command
    that makes one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint there (train first: {make_hint})")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (best.pt or last.pt inside it?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file; report it as ours
        raise CheckpointError(f"{path}: checkpoint is corrupt or incomplete ({first_line(e)})") from None
    check_contents(ckpt, path, needs)
    return ckpt


# What a checkpoint holds: key -> its type(s), or a dict of what the value holds in turn.
TENSOR, NUMBER, WEIGHTS = torch.Tensor, (int, float), dict
RESUME = {  # everything run_state.RunState.load_state_dict and loop.resume_from read
    "model": WEIGHTS, "optimizer": {"state": dict, "param_groups": list}, "ema": (WEIGHTS, type(None)),
    "ema_updates": int, "step": int, "best_exact": NUMBER, "elapsed": NUMBER,
    "config": {"model": dict, "data": dict, "training": dict}, "model_config": dict,
    "sampler": {"rng": dict, "epoch": int, "pos": int, "order": TENSOR, "pending": TENSOR}, "halt_gen": TENSOR,
    "rng": {"python": tuple, "torch": TENSOR, "numpy": {"kind": str, "keys": TENSOR, "pos": int}},
    "slots": {"inputs": TENSOR, "labels": TENSOR, "y": TENSOR, "z": TENSOR, "steps": TENSOR, "halted": TENSOR},
}
EVALUATE = {"model": WEIGHTS, "model_config": dict, "config": {"data": dict}}  # + dataset (or data_size), ema
WHY = {"resume": "--resume reads everything last.pt holds", "evaluate": "evaluation needs the weights, "
       "model_config, config and dataset that impl/train_trm.py saves"}


def check_contents(ckpt: object, path: str | os.PathLike, needs: str = "") -> None:
    """Raise CheckpointError unless ckpt is a dict holding every key that `needs` reads ("resume":
    RESUME; "evaluate": EVALUATE, with dataset or an older checkpoint's data_size), naming all
    missing keys (dotted), or else the first that holds another type. needs "": only the types of
    the keys that are there."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a TRM training checkpoint (it holds a {type_name(ckpt)}, not the dict "
                              f"of model, config, ... that impl/train_trm.py writes)")
    spec = EVALUATE if needs == "evaluate" else RESUME
    if needs == "evaluate":
        old = "data_size" in ckpt and "dataset" not in ckpt
        spec = {**spec, **({"data_size": int} if old else {"dataset": {"seq_len": int, "vocab_size": int}}),
                **({"ema": RESUME["ema"]} if "ema" in ckpt else {})}
    missing, wrong = [], []

    def walk(value: dict, spec: dict, prefix: str) -> None:
        for key, want in spec.items():
            if key not in value:
                missing.extend([prefix + key] if needs else [])
            elif isinstance(want, dict):
                if isinstance(value[key], dict):
                    walk(value[key], want, f"{prefix}{key}.")
                else:
                    wrong.append(f"{prefix}{key} is a {type_name(value[key])}, not a dict")
            elif not isinstance(value[key], want) or (want is int and isinstance(value[key], bool)):
                names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
                wrong.append(f"{prefix}{key} is a {type_name(value[key])}, not a {names}")
    walk(ckpt, spec, "")
    if missing or wrong:
        what = f"missing {', '.join(missing)}" if missing else wrong[0]
        raise CheckpointError(f"{path}: not a TRM training checkpoint ({what}" + (f"; {WHY[needs]})" if needs else ")"))


def load_weights(module: torch.nn.Module, state: dict, path: Path | str) -> None:
    """load_state_dict with an error that lists every missing, unexpected and mis-shaped key."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type_name(state) if not isinstance(state, dict) else "dict holding other things than tensors"
        raise CheckpointError(f"{path}: the weights are a {what}, not a dict of tensors (not a TRM checkpoint?)")
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
    ckpt = load_checkpoint(path, TRAIN_COMMAND, needs="evaluate")
    ckpt["dataset"] = dataset_of(ckpt)
    mcfg = trained_model_config(ckpt, path)
    check_fits_memory(mcfg, device, path)
    try:
        model = build_model(mcfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its model_config does not describe a model this code builds ({e})") from None
    use_ema = ckpt.get("ema") is not None
    weights = ckpt["ema"] if use_ema else ckpt["model"]
    # JEPA runs (train_trm_jepa.py) add a predictor beside the TRM; inference needs only the TRM.
    load_weights(model, {k: v for k, v in weights.items() if not k.startswith("predictor.")}, path)
    return model.to(device).eval(), ckpt, "EMA" if use_ema else "raw"


def trained_model_config(ckpt: dict, path: str | os.PathLike) -> TRMConfig:
    """The checked model config of a checkpoint: known keys of its arch, each of its default's type."""
    # Checkpoints from before model.mlp_t_norm and model.prefix_learned existed were trained with
    # the per-token mlp_t norm and every prefix position learned: keep them computing that.
    model = {**LEGACY_MODEL_CONFIG, **ckpt["model_config"]}
    try:
        upgraded = upgrade(model)
        for field in dataclasses.fields(model_class(upgraded.get("arch", "trm")).config_class):
            if field.name in upgraded and not same_type(field.default, upgraded[field.name]):
                raise ValueError(f"model.{field.name}: {upgraded[field.name]!r} is a {type_name(upgraded[field.name])}, "
                                 f"expected {type_name(field.default)}")
        return model_config(model)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its model_config does not describe a model this code builds ({e})") from None


def same_type(default: object, value: object) -> bool:
    """value has the type of a config key's default (an int counts as a float; a bool is no int)."""
    if default is None or default is dataclasses.MISSING:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_fits_memory(mcfg: TRMConfig, device: torch.device, path: str | os.PathLike) -> None:
    """Refuse, before allocating, a model whose weights alone cannot fit: it is built on the CPU,
    then moved to device."""
    need, gib = inference_memory(mcfg), 2 ** 30
    for where in dict.fromkeys((torch.device("cpu"), device)):
        have = machine_memory(where)
        if have is not None and need > have:
            raise CheckpointError(
                f"{path}: its model_config (hidden_size {mcfg.hidden_size}, num_layers {mcfg.num_layers}, "
                f"vocab_size {mcfg.vocab_size}, seq_len {mcfg.seq_len}) needs at least {need / gib:,.1f} GiB for the "
                f"weights alone, more than the {have / gib:,.1f} GiB of this {where.type}; it cannot be loaded here "
                f"(a damaged checkpoint, or one for a larger machine)")


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
