"""impl/recursion_view.py: the recursion of one puzzle as a self-contained HTML page and a film strip."""
import importlib.util
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import recursion_view as rv
from arch import build_model, model_config

K = 5


class Page(HTMLParser):
    """The frames, the cells of each frame's answer grid, and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.frames, self.links, self.tags = [], [], []
        self.in_frame = self.grids = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "div" and "frame" in (attrs.get("class") or "").split():
            self.frames.append({"step": int(attrs["data-step"]), "halt": float(attrs["data-halt"]), "cells": []})
            self.grids = 0
        if tag == "table" and self.frames:
            self.grids += 1
        if tag == "td" and self.frames and self.grids == 1:          # the answer grid, not the heat map
            self.frames[-1]["cells"].append((attrs.get("class") or "").split())


@pytest.fixture(scope="module")
def trace_and_puzzle():
    torch.manual_seed(0)
    model = build_model(model_config(dict(vocab_size=6, seq_len=16, hidden_size=32, T=2, n=2, N_sup=4))).eval()
    puzzle = np.array([2, 1, 1, 5, 1, 1, 2, 1, 1, 2, 1, 1, 5, 1, 1, 2])
    return rv.record(model, puzzle, K), puzzle


def test_the_page_has_a_frame_per_step_its_halting_values_and_no_outside_link(trace_and_puzzle, tmp_path):
    trace, puzzle = trace_and_puzzle
    reference = np.array([2, 4, 3, 5, 3, 5, 2, 4, 4, 2, 5, 3, 5, 3, 4, 2])
    path = tmp_path / "view.html"
    rv.write_html(path, trace, puzzle, reference, rv.default_cells, "a 4x4 puzzle")
    page = Page()
    page.feed(path.read_text())
    assert [f["step"] for f in page.frames] == list(range(1, K + 1))
    assert [f["halt"] for f in page.frames] == pytest.approx(trace.confidence.tolist(), abs=1e-4)
    assert not any(link.startswith(("http:", "https:", "//")) for link in page.links)
    assert "link" not in page.tags and "img" not in page.tags                  # nothing fetched: style and script inline
    previous = puzzle
    for frame, answer in zip(page.frames, trace.answers):
        assert len(frame["cells"]) == 16
        assert sum("changed" in c for c in frame["cells"]) == int((answer != previous).sum())
        assert sum("wrong" in c for c in frame["cells"]) == int((answer != reference).sum())
        previous = answer


def test_the_trace_follows_the_model_step_by_step(trace_and_puzzle):
    trace, puzzle = trace_and_puzzle
    assert trace.answers.shape == (K, 16) and trace.z_change.shape == (K, 16) and trace.states_2d.shape == (2, K, 2)
    assert (trace.z_change[0] > 0).all() and ((trace.confidence > 0) & (trace.confidence < 1)).all()


def test_pca_keeps_the_spread_of_points_on_a_line():
    points = np.outer(np.arange(4.0), [3.0, 4.0])                  # on a line: one axis carries all the spread
    flat = rv.pca_2d(points)
    assert np.allclose(np.abs(np.diff(flat[:, 0])), 5.0) and np.allclose(flat[:, 1], 0.0, atol=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")
def test_the_film_strip_has_a_frame_per_step(trace_and_puzzle, tmp_path):
    trace, puzzle = trace_and_puzzle
    path = tmp_path / "strip.png"
    assert rv.write_film_strip(path, trace, puzzle, None, rv.default_cells, "a 4x4 puzzle") == K
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("chromium-headless-shell") is None, reason="no headless browser installed")
def test_a_browser_runs_the_page_script_and_shows_the_last_step(trace_and_puzzle, tmp_path):
    trace, puzzle = trace_and_puzzle
    path = tmp_path / "view.html"
    rv.write_html(path, trace, puzzle, None, rv.default_cells, "a 4x4 puzzle")
    dom = subprocess.run(["chromium-headless-shell", "--no-sandbox", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    assert f'class="frame shown" data-step="{K}"' in dom and f"step {K} of {K}" in dom


def test_rows_and_columns_empty_in_every_step_are_cut():
    """An ARC canvas is mostly padding: the page shows the part any step or the puzzle fills."""
    blank = lambda tokens: [[("", "#000" if t else "") for t in tokens[r:r + 4]] for r in range(0, 16, 4)]  # noqa: E731
    puzzle = np.zeros(16, dtype=int)
    puzzle[5] = 1                                                   # row 1, column 1
    answer = puzzle.copy()
    answer[6] = 1                                                   # row 1, column 2
    assert rv.visible([blank(puzzle), blank(answer)]) == ([1], [1, 2])
    assert rv.visible([blank(np.zeros(16, dtype=int))]) == ([0, 1, 2, 3], [0, 1, 2, 3])  # nothing: all kept


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import train_trm
    from test_train import tiny_run_config
    tmp = tmp_path_factory.mktemp("view")
    train_trm.main(tiny_run_config(tmp, max_steps=4, eval_every=4, dtype="float32"), progress=False)
    return tmp / "runs" / "tiny" / "best.pt"


def test_solve_and_evaluate_write_the_pictures(checkpoint, tmp_path):
    import evaluate
    import solve
    page_path = tmp_path / "solve.html"
    assert solve.main(["--checkpoint", str(checkpoint), "--html", str(page_path), "--max-steps", "3",
                       "1.3..4.22.4..3.1"]) == 0
    page = Page()
    page.feed(page_path.read_text())
    assert len(page.frames) == 3 and len(page.frames[0]["cells"]) == 16   # the puzzle module's 4x4 grid
    out = evaluate.main(["--checkpoint", str(checkpoint), "--limit", "4", "--depth", "0", "--html", "2",
                         "--out", str(tmp_path / "eval"), "--no-progress"])
    pages = sorted(p.name for p in out["files"] if p.suffix == ".html")
    assert pages == ["recursion_test_0.html", "recursion_test_1.html"]
