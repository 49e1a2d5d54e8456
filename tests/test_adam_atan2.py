"""AdamATan2 against a reference update written here, element by element, from its formula:
decoupled weight decay, then p -= (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2)), no epsilon."""
import math

import pytest
import torch

from adam_atan2 import AdamATan2

LR, BETAS, WD = 0.01, (0.9, 0.95), 0.5


def reference(p0: list[float], grads: list[list[float]], lr: float, betas: tuple[float, float],
              wd: float) -> list[list[float]]:
    """Parameters after each step, in float64 Python arithmetic, one element at a time."""
    b1, b2 = betas
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    history = []
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            p[i] *= 1 - lr * wd
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            p[i] -= lr / (1 - b1 ** t) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(1 - b2 ** t))
        history.append(list(p))
    return history


# Hand-made: mixed signs and sizes, a gradient that flips sign, one element with zero gradient
# throughout (atan2(0, 0) = 0: only the decay moves it), one tiny gradient (Adam's eps would matter).
P_MATRIX = [0.5, -1.0, 2.0, 0.0, 0.3, -0.7]
G_MATRIX = [[0.1, -2.0, 0.0, 1e-8, 3.0, -0.5],
            [-0.2, -1.0, 0.0, 1e-8, 0.5, 0.5],
            [0.3, 4.0, 0.0, -1e-8, -3.0, 0.5],
            [0.0, -0.5, 0.0, 1e-8, 1.0, -0.5],
            [1.0, 0.25, 0.0, 1e-8, -0.1, 0.5]]
P_VECTOR = [1.5, -0.25, 0.05]
G_VECTOR = [[0.5, 0.5, -1.0], [0.4, -0.6, 2.0], [0.3, 0.7, -3.0], [0.2, -0.8, 4.0], [0.1, 0.9, -5.0]]


def run(steps: int, optimizer_state: dict | None = None, start: tuple | None = None):
    matrix = torch.nn.Parameter(torch.tensor(P_MATRIX, dtype=torch.float64).view(2, 3))
    vector = torch.nn.Parameter(torch.tensor(P_VECTOR, dtype=torch.float64))
    if start is not None:
        with torch.no_grad():
            matrix.copy_(start[0])
            vector.copy_(start[1])
    opt = AdamATan2([{"params": [matrix], "weight_decay": WD}, {"params": [vector], "weight_decay": 0.0}],
                    lr=LR, betas=BETAS)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    first = 0 if optimizer_state is None else optimizer_state["state"][0]["step"]
    history = []
    for t in range(first, first + steps):
        matrix.grad = torch.tensor(G_MATRIX[t], dtype=torch.float64).view(2, 3)
        vector.grad = torch.tensor(G_VECTOR[t], dtype=torch.float64)
        opt.step()
        history.append((matrix.detach().flatten().tolist(), vector.detach().tolist()))
    return history, opt, (matrix.detach().clone(), vector.detach().clone())


def test_steps_match_the_reference_formula():
    ours, _, _ = run(5)
    ref_matrix = reference(P_MATRIX, G_MATRIX, LR, BETAS, WD)
    ref_vector = reference(P_VECTOR, G_VECTOR, LR, BETAS, 0.0)
    for t in range(5):
        assert ours[t][0] == pytest.approx(ref_matrix[t], rel=1e-12, abs=1e-12), f"step {t + 1}"
        assert ours[t][1] == pytest.approx(ref_vector[t], rel=1e-12, abs=1e-12), f"step {t + 1}"
    # The zero-gradient element moved by the decay alone; the 1e-8 gradient took a full-size step.
    assert ours[4][0][2] == pytest.approx(2.0 * (1 - LR * WD) ** 5, rel=1e-12)
    assert abs(ours[0][0][3] - 0.0) > 0.5 * LR


def test_first_step_has_the_same_size_whatever_the_gradient_size():
    """At t=1, m = (1 - beta1) g and sqrt(v / bc2) = |g|, and bc1 stays outside atan2 (as in
    imoneoi/adam-atan2): every element moves by (lr / (1 - beta1)) * atan(1 - beta1) against g."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    p.grad = torch.tensor([1e-6, -5.0, 100.0], dtype=torch.float64)
    AdamATan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0).step()
    size = 0.1 / 0.1 * math.atan(0.1)                                  # about 0.0997
    expected = torch.tensor([1.0 - size, -2.0 + size, 3.0 - size], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)


def test_resume_from_state_dict_continues_exactly():
    full, _, _ = run(5)
    _, opt, params = run(2)
    resumed, _, _ = run(3, optimizer_state=opt.state_dict(), start=params)
    assert resumed == full[2:]


def test_bad_arguments_are_named():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        AdamATan2(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamATan2(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamATan2(p, weight_decay=-0.1)
