"""The model class of each model.arch: what the training scripts, the evaluator and studies build."""
from __future__ import annotations

from hrm import HRM
from transformer import DirectTransformer
from trm import TRM, TRMConfig

MODELS = {"trm": TRM, "hrm": HRM, "transformer": DirectTransformer}


def build_model(config: TRMConfig) -> TRM:
    """A fresh model of config.arch (all share TRM's interface: initial_carry, reset_carry, forward, predict)."""
    return MODELS[config.arch](config)
