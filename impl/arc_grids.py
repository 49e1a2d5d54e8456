"""ARC grids: tokens on a square canvas, the augmentations of the official ARC builder, and their
exact inverses. No I/O, no torch.

An ARC grid is a 2-D array of colours 0..9, 1x1 to 30x30. As tokens (official layout):

    0 = PAD (outside the grid; no target in the labels), 1 = EOS (end-of-grid marker), 2..11 = colours 0..9

A grid of h x w placed at (r0, c0) on a canvas x canvas square (official: 30) fills
rows r0..r0+h-1, columns c0..c0+w-1 with colour + 2; the row just below it (columns c0..c0+w-1)
and the column just right of it (rows r0..r0+h-1) hold EOS where they fit on the canvas; the
rest is PAD. crop() reads a grid back: the largest rectangle from the origin that holds colours
only (the official evaluator's crop), so a prediction is cropped at the end-of-grid marker.

A *version* of a task is one augmentation, applied to every grid of the task alike:
    grid -> dihedral(mapping[grid], tid)
tid in 0..7 (the dihedral group: identity, three rotations, two flips, two transposes, numbered
as the official dataset/common.py) and mapping a permutation of the colours 1..9 with 0 kept
(black stays black). The inverse is mapping^-1[dihedral^-1(grid)]. Training examples may also be
translated (placed at a random origin); their inverse is cropping at that origin. Versions are
named as in the official identifiers.json: "<task>" for the original, "<task>|||t<tid>|||<the
ten digits of mapping>" for the others, so an official build's names parse here too.
"""
from __future__ import annotations

import numpy as np

PAD, EOS, COLOUR0 = 0, 1, 2  # tokens; colour c is token c + COLOUR0
VOCAB_SIZE = 12              # PAD, EOS, 10 colours
MAX_GRID = 30                # the largest ARC grid side; the official canvas
SEPARATOR = "|||"            # official identifiers.json: name|||t<tid>|||<mapping digits>

# The inverse of each dihedral transform (official DIHEDRAL_INVERSE): rotations by 90 and 270
# degrees undo each other; every flip and transpose is its own inverse.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_MAPPING = np.arange(10, dtype=np.uint8)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """One of the 8 symmetries of the square, numbered as the official dataset/common.py."""
    if tid == 0:
        return grid
    if tid in (1, 2, 3):
        return np.rot90(grid, k=tid)           # counter-clockwise by 90, 180, 270 degrees
    if tid == 4:
        return np.fliplr(grid)                 # left-right
    if tid == 5:
        return np.flipud(grid)                 # up-down
    if tid == 6:
        return grid.T                          # main-diagonal transpose
    if tid == 7:
        return np.fliplr(np.rot90(grid, k=1))  # anti-diagonal transpose
    raise ValueError(f"dihedral transform id {tid} is not in 0..7")


def augment_grid(grid: np.ndarray, tid: int, mapping: np.ndarray) -> np.ndarray:
    """A version of a grid: colours mapped, then the dihedral transform (official order)."""
    return np.ascontiguousarray(dihedral(mapping[grid], tid))


def invert_grid(grid: np.ndarray, tid: int, mapping: np.ndarray) -> np.ndarray:
    """The exact inverse of augment_grid: the inverse transform, then the inverse colour mapping."""
    return np.ascontiguousarray(np.argsort(mapping).astype(np.uint8)[dihedral(grid, DIHEDRAL_INVERSE[tid])])


def random_version(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A random dihedral transform and colour permutation with 0 kept (official aug())."""
    tid = int(rng.integers(0, 8))
    mapping = np.concatenate([[0], 1 + rng.permutation(9)]).astype(np.uint8)
    return tid, mapping


def version_name(task: str, tid: int, mapping: np.ndarray) -> str:
    """The official identifiers.json name of a version ("<task>" for the original)."""
    if tid == 0 and np.array_equal(mapping, IDENTITY_MAPPING):
        return task
    return f"{task}{SEPARATOR}t{tid}{SEPARATOR}{''.join(str(int(c)) for c in mapping)}"


def parse_version(name: str) -> tuple[str, int, np.ndarray]:
    """(task, tid, mapping) of an identifiers.json name; ValueError if it is not one."""
    if SEPARATOR not in name:
        return name, 0, IDENTITY_MAPPING
    parts = name.split(SEPARATOR)
    if len(parts) != 3 or not parts[1].startswith("t") or not parts[1][1:].isdigit():
        raise ValueError(f"{name!r} is not an ARC version name (task|||t<0..7>|||<10 digits>)")
    tid, digits = int(parts[1][1:]), parts[2]
    if tid > 7 or len(digits) != 10 or sorted(digits) != list("0123456789") or digits[0] != "0":
        raise ValueError(f"{name!r} is not an ARC version name (task|||t<0..7>|||<10 digits, 0 first>)")
    return parts[0], tid, np.array([int(c) for c in digits], dtype=np.uint8)


def to_canvas(grid: np.ndarray, canvas: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A grid as (canvas * canvas,) uint8 tokens at origin, with its end-of-grid marker (official)."""
    h, w = grid.shape
    r0, c0 = origin
    if r0 < 0 or c0 < 0 or r0 + h > canvas or c0 + w > canvas:
        raise ValueError(f"a {h}x{w} grid at {origin} does not fit a {canvas}x{canvas} canvas")
    tokens = np.full((canvas, canvas), PAD, dtype=np.uint8)
    tokens[r0:r0 + h, c0:c0 + w] = grid + COLOUR0
    if r0 + h < canvas:
        tokens[r0 + h, c0:c0 + w] = EOS
    if c0 + w < canvas:
        tokens[r0:r0 + h, c0 + w] = EOS
    return tokens.reshape(-1)


def crop(tokens: np.ndarray, canvas: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The grid in (canvas * canvas,) tokens from origin: the largest-area rectangle holding colours
    only (the official evaluator's crop; the first such rectangle on a tie). A prediction without
    a colour at the origin gives a 0x0 grid."""
    r0, c0 = origin
    square = np.asarray(tokens).reshape(canvas, canvas)[r0:, c0:]
    colour = (square >= COLOUR0) & (square < COLOUR0 + 10)
    if not colour.size:
        return np.zeros((0, 0), dtype=np.uint8)
    run = np.where(colour.all(axis=1), colour.shape[1], colour.argmin(axis=1))  # colours from column 0, per row
    width = np.minimum.accumulate(run)                                           # widest rectangle of rows 0..r
    area = width * np.arange(1, len(width) + 1)
    rows = int(area.argmax()) + 1 if area.max() > 0 else 0
    return (square[:rows, :width[rows - 1] if rows else 0] - COLOUR0).astype(np.uint8)


def origin_of(tokens: np.ndarray, canvas: int) -> tuple[int, int]:
    """Where a grid was placed (its first row and column that are not PAD), e.g. a translated input."""
    square = np.asarray(tokens).reshape(canvas, canvas) != PAD
    if not square.any():
        return 0, 0
    return int(square.any(axis=1).argmax()), int(square.any(axis=0).argmax())


def grid_key(grid: np.ndarray) -> bytes:
    """A hashable, exact key of a grid (shape and colours), for votes and duplicate checks."""
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    return bytes([grid.shape[0], grid.shape[1] if grid.ndim == 2 else 0]) + grid.tobytes()
