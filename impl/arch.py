"""The model section of a config: which class model.arch names, its keys, and their values checked.

    mcfg = model_config(config["model"], vocab_size=V, seq_len=S)   # ValueError names model.<key>
    model = build_model(mcfg)

model.arch: trm (the paper's, trm.py); separate_nets, single_z, z_slots (trm_variants.py); hrm
(hrm.py); transformer (transformer.py). Any other name X is the class MODEL in a module model_X.py
in impl/ (or a folder on PYTHONPATH): a new variant is one new file. A class whose config has
keys of its own sets config_class to a dataclass that extends TRMConfig with them (and a rules()
method for their values); those keys then belong in the model section when that arch is chosen.
Before model.arch named the variants, the keys separate_nets, single_z and z_slots chose them;
override files and checkpoints that use them still load (upgrade()).
"""
from __future__ import annotations

import dataclasses
import importlib

from hrm import HRM
from transformer import DirectTransformer
from trm import TRM, TRMConfig
from trm_variants import ONE_STEP, SeparateNets, SingleZ, ZSlots

MODELS = {"trm": TRM, "separate_nets": SeparateNets, "single_z": SingleZ, "z_slots": ZSlots, "hrm": HRM,
          "transformer": DirectTransformer}


def model_class(name: str) -> type[TRM]:
    """The class of model.arch `name`: a built-in, or MODEL of the module model_<name>."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model.arch: {name!r} is not one of {', '.join(MODELS)}, nor a name a module "
                         f"model_<name> can have")
    if name in MODELS:
        return MODELS[name]
    module_name = f"model_{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # the module exists but imports something missing: say that
            raise
        raise ValueError(f"model.arch: {name!r} is not one of {', '.join(MODELS)}, and there is no "
                         f"{module_name}.py in impl/ or on PYTHONPATH (a new variant: impl/{module_name}.py "
                         f"defining MODEL)") from None
    cls = getattr(module, "MODEL", None)
    if not (isinstance(cls, type) and issubclass(cls, TRM)):
        raise ValueError(f"model.arch: {module.__file__} must define MODEL, a subclass of trm.TRM")
    return cls


def own_keys(name: str) -> dict:
    """The model keys arch `name` adds to TRMConfig's, with their defaults ({} for trm)."""
    base = {f.name for f in dataclasses.fields(TRMConfig)}
    return {f.name: f.default for f in dataclasses.fields(model_class(name).config_class) if f.name not in base}


# Old keys that chose a variant, and the arch each one belongs to (their "off" values load as no key).
LEGACY_KEYS = {"separate_nets": "separate_nets", "single_z": "single_z", "z_slots": "z_slots", "H_layers": "hrm",
               "depth": "transformer"}
LEGACY_OFF = {"separate_nets": False, "single_z": False, "z_slots": 1, "H_layers": 0, "depth": 0}


def upgrade(model: dict) -> dict:
    """A model section with the old variant keys turned into model.arch: separate_nets true, single_z
    true or z_slots K > 1 on arch trm become that arch; a variant key at its old "off" value under
    another arch is dropped. Raises ValueError naming the key where the old keys contradict."""
    model = dict(model)
    arch = model.get("arch", "trm")
    chosen = []
    for key, owner in LEGACY_KEYS.items():
        if key in ("separate_nets", "single_z") and owner == arch and key in model:
            if model[key] is not True:  # the flag of the arch itself: true says it again, false contradicts it
                raise ValueError(f"model.{key}: {model[key]!r} contradicts model.arch {arch!r} (remove model.{key})")
            del model[key]
        if key not in model or owner == arch:
            continue
        if model[key] == LEGACY_OFF[key]:
            del model[key]
        elif owner in ("separate_nets", "single_z", "z_slots"):
            chosen.append(key)
    for key in chosen:
        if arch != "trm":
            raise ValueError(f"model.{key}: {model[key]!r} is a trm option (model.arch is {arch!r}; "
                             f"set model.arch to {LEGACY_KEYS[key]!r} instead)")
        if len(chosen) > 1 and key != chosen[0]:
            raise ValueError(f"model.{key}: cannot be combined with model.{chosen[0]}")
        if key != "z_slots":
            del model[key]
        model["arch"] = LEGACY_KEYS[key]
    return model


def model_defaults(model: dict, override: object = None) -> dict:
    """A copy of a RUN_CONFIG's model section with the keys an override may set beside its own:
    the keys of the arch the override (its model section, possibly ill-typed) chooses, and the old
    variant keys it uses (upgrade maps them). Raises ValueError for an arch that does not exist."""
    model = dict(model)
    override = override if isinstance(override, dict) else {}
    for key in LEGACY_KEYS:
        if key in override and key not in model:
            model[key] = LEGACY_OFF[key]
    chosen = upgrade({**model, **override}).get("arch", "trm")
    if isinstance(chosen, str):  # else the merge names the wrong type
        for key, default in own_keys(chosen).items():
            model.setdefault(key, default)
    return model


def rules(cfg: TRMConfig) -> list[tuple[str, bool, str]]:
    """(key, ok, why) for every value of a model config, the variant's own rules last."""
    at_least = {"vocab_size": 2, "n_prefix": 0, **dict.fromkeys((
        "width_multiple", "seq_len", "hidden_size", "num_layers", "num_heads", "T", "n", "N_sup",
        "num_puzzle_identifiers"), 1)}
    choices = {"gradient": ("last_cycle", "one_step"), "pos_encoding": ("rope", "learned", "none"),
               "mlp_t_norm": ("sequence", "hidden"), "prefix_learned": ("first", "all")}
    return [(key, getattr(cfg, key) >= low, f"must be >= {low}") for key, low in at_least.items()] + [
        (key, getattr(cfg, key) in allowed, f"must be {', '.join(allowed[:-1])} or {allowed[-1]}")
        for key, allowed in choices.items()] + [
        ("expansion", cfg.expansion > 0, "must be > 0"),
        ("halt_exploration_prob", 0.0 <= cfg.halt_exploration_prob <= 1.0, "must be in [0, 1]"),
        ("n_prefix", cfg.num_puzzle_identifiers == 1 or cfg.n_prefix >= 1,
         f"must be >= 1: the {cfg.num_puzzle_identifiers} puzzle identifiers' embeddings go there"),
        ("hidden_size", cfg.mlp_t or cfg.hidden_size % cfg.num_heads == 0,
         f"must be divisible by num_heads={cfg.num_heads}"),
        ("hidden_size", cfg.mlp_t or cfg.pos_encoding != "rope" or (cfg.hidden_size // cfg.num_heads) % 2 == 0,
         "hidden_size / num_heads must be even for rope"),
        ("gradient", cfg.gradient == "last_cycle" or model_class(cfg.arch) in ONE_STEP,
         f"is available for arch {', '.join(n for n, c in MODELS.items() if c in ONE_STEP)} only "
         f"(model.arch is {cfg.arch!r})"),
    ] + (cfg.rules() if hasattr(cfg, "rules") else [])


def model_config(model: dict, **shape) -> TRMConfig:
    """The checked config of a model section (old variant keys upgraded) and the data's shapes
    (vocab_size, seq_len, num_puzzle_identifiers). ValueError names the model.* key."""
    model = upgrade(model)
    config_class = model_class(model.get("arch", "trm")).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in model:
        if key not in known:
            owner = LEGACY_KEYS.get(key)
            where = f" (a key of arch {owner!r})" if owner else ""
            raise ValueError(f"model.{key}: not a key of arch {model.get('arch', 'trm')!r}{where}")
    cfg = config_class(**{**model, **shape})
    for key, ok, why in rules(cfg):
        if not ok:
            raise ValueError(f"model.{key}: {getattr(cfg, key)!r} {why}")
    return cfg


def model_class_of(config: TRMConfig) -> type[TRM]:
    """The class of config.arch; model.gradient one_step picks the variant's one-step class."""
    cls = model_class(config.arch)
    if config.gradient == "one_step":
        if cls not in ONE_STEP:
            raise ValueError(f"model.gradient: 'one_step' is not available for arch {config.arch!r}")
        cls = ONE_STEP[cls]
    return cls


def build_model(config: TRMConfig) -> TRM:
    """A fresh model of config.arch (all share TRM's interface: initial_carry, reset_carry, forward, predict)."""
    return model_class_of(config)(config)
