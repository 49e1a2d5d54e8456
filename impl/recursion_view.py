"""A picture of the recursion: what a trained model does to one puzzle, supervision step by step.

    trace = record(model, puzzle, steps=16)                   # answers, halting, y and z after each step
    write_html(path, trace, puzzle, reference, cells)         # one self-contained page (no network)
    write_film_strip(path, trace, puzzle, reference, cells)   # the same as a PNG strip (matplotlib)

The page shows the puzzle and, per supervision step, the answer with the cells that changed since
the previous step outlined and the wrong ones (where the answer is known) in red; the halting
head's confidence per step as a small chart; and the latent z: the per-cell change |z_k - z_(k-1)|
as a heat map on the puzzle's own layout (it reads cell by cell: where the latent is still
moving), beside a 2-D projection (PCA over this puzzle's steps) of the cell-averaged y and z, whose
points stop moving once the recursion has settled. A slider and step buttons move through the steps.

cells(tokens) -> rows of (text, css colour) draws a token array; a puzzle module may offer it as
its `cells(tokens, meta)` hook (impl/puzzles.py); default_cells shows the token ids.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

Cells = Callable[[np.ndarray], list[list[tuple[str, str]]]]


@dataclass
class Trace:
    answers: np.ndarray       # (K, S) the answer after each supervision step
    confidence: np.ndarray    # (K,) sigmoid of the halting logit after each step
    z_change: np.ndarray      # (K, S) per cell: |z_k - z_(k-1)| over the hidden dimension (k = 1: from z_init)
    states_2d: np.ndarray     # (2, K, 2) cell-averaged y (row 0) and z (row 1) after each step, each by its PCA


@torch.no_grad()
def record(model: torch.nn.Module, puzzle: np.ndarray, steps: int, dtype: torch.dtype = torch.float32,
           puzzle_id: int | None = None) -> Trace:
    """Run `steps` supervision steps of model (eval mode, no halting) on one puzzle (S,) tokens."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(puzzle, np.int64), device=device)[None]
    ids = {} if puzzle_id is None else {"puzzle_ids": torch.tensor([puzzle_id], device=device)}
    carry = model.initial_carry(1, device, dtype)
    p = model.config.n_prefix
    answers, confidence, z_change, ys, zs = [], [], [], [], []
    for _ in range(steps):
        z_before = carry.z
        carry, logits, q_logit = model(x, carry, **ids)
        answers.append(logits.argmax(-1)[0].cpu().numpy())
        confidence.append(float(torch.sigmoid(q_logit.float())[0]))
        z_change.append((carry.z - z_before).float()[p:, 0].norm(dim=-1).cpu().numpy())
        ys.append(carry.y.float()[p:, 0].mean(0).cpu().numpy())
        zs.append(carry.z.float()[p:, 0].mean(0).cpu().numpy())
    states = np.stack([pca_2d(np.stack(ys)), pca_2d(np.stack(zs))])   # (2, K, 2): y and z, each on its own axes
    return Trace(np.stack(answers), np.array(confidence), np.stack(z_change), states)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): the points on their two principal axes (zeros where there is no spread)."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = np.zeros((len(points), 2))
    k = min(2, len(vt))
    out[:, :k] = centred @ vt[:k].T
    return out


def default_cells(tokens: np.ndarray) -> list[list[tuple[str, str]]]:
    """Token ids in a square grid when the length is a square, else one row."""
    tokens = np.asarray(tokens)
    side = int(round(math.sqrt(len(tokens))))
    width = side if side * side == len(tokens) else len(tokens)
    return [[(str(int(t)), "") for t in tokens[r:r + width]] for r in range(0, len(tokens), width)]


# ----------------------------------------------------------------------------------------------
# The page


STYLE = """body{font-family:sans-serif;margin:1em;color:#222}h1{font-size:1.2em}
h2{font-size:.9em;margin:.6em 0 .3em}.row{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
table.grid{border-collapse:collapse}
table.grid td{width:1.5em;height:1.5em;text-align:center;font-size:.8em;border:1px solid #bbb;padding:0}
td.dim{color:#999}td.changed{outline:2px solid #f80;outline-offset:-2px}td.wrong{color:#d00;font-weight:bold}
td.wrong.changed{outline-color:#d00}.frame{display:none}.frame.shown{display:block}
.controls{margin:.5em 0}.controls button{font-size:1em}svg text{font-size:10px}.pt.now{stroke:#000;stroke-width:2}"""

SCRIPT = """const frames=[...document.querySelectorAll('.frame')],slider=document.getElementById('step');
function show(k){k=Math.max(1,Math.min(frames.length,k));slider.value=k;
frames.forEach((f,i)=>f.classList.toggle('shown',i==k-1));
document.querySelectorAll('.pt').forEach(e=>e.classList.toggle('now',e.dataset.step==k));
document.getElementById('label').textContent='step '+k+' of '+frames.length+', halting confidence '
+frames[k-1].dataset.halt;}
slider.oninput=()=>show(+slider.value);document.getElementById('prev').onclick=()=>show(+slider.value-1);
document.getElementById('next').onclick=()=>show(+slider.value+1);show(frames.length);"""


def _grid(cells: list[list[tuple[str, str]]], classes: list[list[str]] | None = None) -> str:
    rows = []
    for r, row in enumerate(cells):
        tds = []
        for c, (text, colour) in enumerate(row):
            cls = f' class="{classes[r][c]}"' if classes and classes[r][c] else ""
            style = f' style="background:{html.escape(colour)}"' if colour else ""
            tds.append(f"<td{cls}{style}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return '<table class="grid">' + "".join(rows) + "</table>"


def visible(grids: list[list[list[tuple[str, str]]]]) -> tuple[list[int], list[int]]:
    """The rows and columns that hold something (text or colour) in any of the grids: an ARC canvas
    is cut to its grids, a Sudoku or a maze keeps every cell."""
    rows = [r for r in range(len(grids[0])) if any(any(cell != ("", "") for cell in g[r]) for g in grids)]
    width = max(len(row) for row in grids[0])
    cols = [c for c in range(width) if any(c < len(row) and row[c] != ("", "") for g in grids for row in g)]
    return (rows, cols) if rows and cols else (list(range(len(grids[0]))), list(range(width)))


def _cut(grid: list[list], keep: tuple[list[int], list[int]]) -> list[list]:
    return [[grid[r][c] for c in keep[1] if c < len(grid[r])] for r in keep[0]]


def _shaped(values: np.ndarray, like: list[list]) -> list[list]:
    """A flat (S,) array laid out as the rows of a cells() grid."""
    out, i = [], 0
    for row in like:
        out.append(list(values[i:i + len(row)]))
        i += len(row)
    return out


def answer_classes(answer: np.ndarray, previous: np.ndarray, puzzle: np.ndarray,
                   reference: np.ndarray | None, like: list[list]) -> list[list[str]]:
    """Per cell: 'changed' since the previous step, 'wrong' against the reference (where known),
    'dim' where the answer repeats the puzzle's own token."""
    names = []
    for i, (a, b, p) in enumerate(zip(answer, previous, puzzle)):
        cls = ["changed"] if a != b else []
        if reference is not None and reference[i] >= 0 and a != reference[i]:
            cls.append("wrong")
        elif a == p:
            cls.append("dim")
        names.append(" ".join(cls))
    return _shaped(np.array(names, dtype=object), like)


def heat_top(z_change: np.ndarray) -> float:
    """The change drawn at full colour: the largest after step 1 (the first step moves z away from
    z_init far more than any later one, and would leave the later steps blank); step 1 saturates."""
    later = z_change[1:].max() if len(z_change) > 1 else 0.0
    return float(later if later > 0 else z_change.max())


def _heat(values: np.ndarray, top: float, like: list[list], keep: tuple[list[int], list[int]]) -> str:
    cells = [[("", f"rgba(200,40,0,{min(1.0, v / top) if top > 0 else 0:.3f})") for v in row]
             for row in _shaped(values, like)]
    return _grid(_cut(cells, keep))


def _halting_chart(confidence: np.ndarray, width: int = 240, height: int = 120) -> str:
    K = len(confidence)
    x = lambda k: 20 + (width - 30) * (k / max(1, K - 1))  # noqa: E731
    y = lambda c: height - 15 - (height - 25) * c          # noqa: E731
    line = " ".join(f"{x(k):.1f},{y(c):.1f}" for k, c in enumerate(confidence))
    points = "".join(f'<circle class="pt" data-step="{k + 1}" cx="{x(k):.1f}" cy="{y(c):.1f}" r="3" fill="#07c">'
                     f"<title>step {k + 1}: {c:.3f}</title></circle>" for k, c in enumerate(confidence))
    return (f'<svg width="{width}" height="{height}"><line x1="20" x2="{width - 10}" y1="{y(0.5):.1f}" '
            f'y2="{y(0.5):.1f}" stroke="#aaa" stroke-dasharray="3"/><text x="0" y="{y(0.5) + 3:.1f}">0.5</text>'
            f'<text x="0" y="{y(1) + 3:.1f}">1</text><text x="0" y="{y(0) + 3:.1f}">0</text>'
            f'<polyline points="{line}" fill="none" stroke="#07c"/>{points}'
            f'<text x="20" y="{height - 2}">supervision step 1..{K}</text></svg>')


def _pca_chart(states: np.ndarray, size: int = 130) -> str:
    """y's and z's paths side by side, each on its own principal axes (a path that stops has settled)."""
    parts = []
    for i, (name, colour, path) in enumerate((("y", "#07c", states[0]), ("z", "#e70", states[1]))):
        low, span = path.min(axis=0), np.maximum(np.ptp(path, axis=0), 1e-9)
        unit = (path - low) / span                                       # (K, 2) within [0, 1]
        xy = [(i * (size + 10) + 10 + (size - 20) * u, 10 + (size - 20) * v) for u, v in unit]
        parts.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}" fill="none" '
                     f'stroke="{colour}" stroke-opacity=".5"/>')
        parts += [f'<circle class="pt" data-step="{k + 1}" cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}">'
                  f"<title>{name}, step {k + 1}</title></circle>" for k, (a, b) in enumerate(xy)]
        parts.append(f'<text x="{i * (size + 10) + 10}" y="{size + 10}" fill="{colour}">{name}, cell-averaged</text>')
    return f'<svg width="{2 * size + 10}" height="{size + 14}">{"".join(parts)}</svg>'


def page(trace: Trace, puzzle: np.ndarray, reference: np.ndarray | None, cells: Cells, title: str,
         note: str = "") -> str:
    """The self-contained HTML page (inline style and script, no link or source outside it)."""
    K = len(trace.answers)
    layout = cells(puzzle)
    keep = visible([layout] + [cells(a) for a in trace.answers])
    top = heat_top(trace.z_change)
    frames = []
    previous = np.asarray(puzzle)
    for k in range(K):
        answer = trace.answers[k]
        marks = answer_classes(answer, previous, puzzle, reference, layout)
        right = "" if reference is None else (
            f", {'right' if np.array_equal(answer[reference >= 0], reference[reference >= 0]) else 'wrong'}")
        frames.append(
            f'<div class="frame" data-step="{k + 1}" data-halt="{trace.confidence[k]:.4f}">'
            f"<h2>answer after step {k + 1}{right}; halting confidence {trace.confidence[k]:.3f}</h2>"
            f"{_grid(_cut(cells(answer), keep), _cut(marks, keep))}"
            f"<h2>latent change |z<sub>{k + 1}</sub> - z<sub>{k}</sub>| per cell "
            f"(largest {trace.z_change[k].max():.3g})</h2>"
            f"{_heat(trace.z_change[k], top, layout, keep)}</div>")
        previous = answer
    legend = ("outlined: changed since the previous step" + ("; red: wrong" if reference is not None else "")
              + "; grey: as in the puzzle")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>"
            f'<div class="controls"><button id="prev">&#9664;</button> <input type="range" id="step" min="1" '
            f'max="{K}" value="{K}"> <button id="next">&#9654;</button> <span id="label"></span></div>'
            f'<div class="row"><div><h2>puzzle</h2>{_grid(_cut(layout, keep))}</div><div>{"".join(frames)}'
            f"<p>{legend}</p></div><div><h2>halting confidence per step</h2>{_halting_chart(trace.confidence)}"
            f"<h2>states after each step (PCA)</h2>{_pca_chart(trace.states_2d)}</div></div>"
            f'<script type="application/json" id="trace">{json.dumps({"halting": trace.confidence.round(4).tolist()})}'
            f"</script><script>{SCRIPT}</script></body></html>")


def write_html(path: str | Path, trace: Trace, puzzle: np.ndarray, reference: np.ndarray | None, cells: Cells,
               title: str, note: str = "") -> None:
    Path(path).write_text(page(trace, puzzle, reference, cells, title, note), encoding="utf-8")


def write_film_strip(path: str | Path, trace: Trace, puzzle: np.ndarray, reference: np.ndarray | None,
                     cells: Cells, title: str) -> int:
    """The answer after each step (changed cells outlined, wrong ones in red) over the latent change,
    as one PNG row of frames; returns the number of step frames. Needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    K = len(trace.answers)
    fig, axes = plt.subplots(2, K + 1, figsize=(1.6 * (K + 1), 3.4), squeeze=False)
    layout = cells(puzzle)
    keep = visible([layout] + [cells(a) for a in trace.answers])
    top = heat_top(trace.z_change) or 1.0
    previous = np.asarray(puzzle)
    for col in range(K + 1):
        grid = layout if col == 0 else cells(trace.answers[col - 1])
        classes = None if col == 0 else answer_classes(trace.answers[col - 1], previous, puzzle, reference, layout)
        _draw(axes[0, col], _cut(grid, keep), classes and _cut(classes, keep), to_rgba, Rectangle)
        axes[0, col].set_title("puzzle" if col == 0 else f"step {col}\nhalt {trace.confidence[col - 1]:.2f}",
                               fontsize=8)
        if col:
            heat = _cut(_shaped(trace.z_change[col - 1] / top, layout), keep)
            _draw(axes[1, col], [[("", to_rgba((0.8, 0.15, 0.0), min(1.0, v))) for v in row] for row in heat],
                  None, to_rgba, Rectangle)
            previous = trace.answers[col - 1]
        else:
            axes[1, 0].text(0.5, 0.5, "latent\nchange\n|z_k - z_k-1|", ha="center", va="center", fontsize=8)
            axes[1, 0].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return K


def _draw(ax, grid: list[list[tuple[str, object]]], classes: list[list[str]] | None, to_rgba, Rectangle) -> None:
    """One grid of cells on a matplotlib axis, styled as the page styles it."""
    rows, cols = len(grid), max(len(r) for r in grid)
    for r, row in enumerate(grid):
        for c, (text, colour) in enumerate(row):
            cls = classes[r][c] if classes else ""
            face = to_rgba(colour) if colour else (1, 1, 1, 1)
            edge = "#f80" if "changed" in cls else "#bbb"
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, facecolor=face, edgecolor=edge,
                                   linewidth=1.5 if "changed" in cls else 0.3))
            if text:
                ax.text(c + 0.5, rows - 0.5 - r, text, ha="center", va="center", fontsize=6,
                        color="#d00" if "wrong" in cls else "#999" if "dim" in cls else "#222")
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    ax.set_aspect("equal")
    ax.axis("off")


def draw(model: torch.nn.Module, puzzle: np.ndarray, steps: int, dtype: torch.dtype, cells: Cells | None,
         reference: np.ndarray | None, title: str, html_path: str | Path | None = None,
         png_path: str | Path | None = None, puzzle_id: int | None = None, note: str = "") -> list[str]:
    """Record one puzzle's recursion and write the page and/or the film strip; returns what to print
    (the files written, or why the strip was skipped)."""
    trace = record(model, puzzle, steps, dtype, puzzle_id)
    cells = cells or default_cells
    lines = []
    if html_path:
        write_html(html_path, trace, puzzle, reference, cells, title, note)
        lines.append(f"recursion: {html_path}")
    if png_path:
        try:
            import matplotlib  # noqa: F401  (optional, as for the other plots)
        except ImportError:
            lines.append(f"film strip skipped ({png_path}): matplotlib is not installed "
                         f"(python -m pip install matplotlib)")
        else:
            write_film_strip(png_path, trace, puzzle, reference, cells, title)
            lines.append(f"film strip: {png_path}")
    return lines


def numbered(path: str, index: int, count: int) -> str:
    """path itself for one puzzle; path_<index>.<suffix> for each of several."""
    if count == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}_{index}{p.suffix}"))
