"""Shared pytest setup: the scripts in impl/ import each other as top-level modules; one torch
thread per test process (the tests are tiny, and two threads contend on a 2-core machine)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "impl"))
torch.set_num_threads(1)
