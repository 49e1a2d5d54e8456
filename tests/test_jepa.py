"""JEPA variant tests: weight 0 is plain TRM, the stop-gradient boundary, pooling, a run with its
log and resume, and config errors."""
import copy
import json

import pytest
import torch

import train_trm
import train_trm_jepa as jepa
from arch import model_config
from config import merge_config
from errors import ConfigError
from trm import TRM, TRMConfig


def tiny_config(base: dict, tmp_path, data_dir, **training) -> dict:
    """tests/test_train.py's tiny run (4x4, D=32, T=2, n=2, N_sup=4, batch 16) over any base."""
    config = copy.deepcopy(base)
    config["model"].update(hidden_size=32, T=2, n=2, N_sup=4)
    config["data"].update(grid_size=4, n_train=300, n_test=64, givens=[8, 10], data_dir=str(data_dir))
    config["training"].update(runs_dir=str(tmp_path / "runs"), batch_size=16, max_steps=10,
                              eval_every=10, log_every=2, warmup_steps=5, lr=3e-3, eval_batch_size=64)
    config["training"].update(training)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # generated once, cached as .npz for every run here


def read_log(run_dir, kind="train") -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == kind]


def tiny_model(z_slots: int = 1, **kwargs) -> jepa.TRMJEPA:
    torch.manual_seed(0)
    cfg = model_config(dict(vocab_size=6, seq_len=16, hidden_size=32, T=2, n=2, N_sup=4, mlp_t=True,
                            pos_encoding="none", z_slots=z_slots))
    return jepa.jepa_model(cfg, **kwargs)


def batch(B: int = 4):
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(1, 6, (B, 16), generator=g)
    labels = torch.randint(2, 6, (B, 16), generator=g)
    return inputs, labels


# -- weight 0 is plain TRM --------------------------------------------------------------------------

def test_weight_zero_matches_plain_training(tmp_path, data_dir):
    plain = tiny_config(train_trm.RUN_CONFIG, tmp_path, data_dir, run_name="plain")
    train_trm.main(plain, progress=False)
    zero = tiny_config(jepa.RUN_CONFIG, tmp_path, data_dir, latent_loss_weight=0.0)
    jepa.main(zero, progress=False)
    a, b = tmp_path / "runs" / "plain", tmp_path / "runs" / "tiny_trm_sudoku_jepa"
    strip = lambda records: [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in records]  # noqa: E731
    assert len(read_log(a)) == 5 and strip(read_log(a)) == strip(read_log(b))
    assert strip(read_log(a, "eval")) == strip(read_log(b, "eval"))
    ca, cb = (torch.load(d / "last.pt", weights_only=True) for d in (a, b))
    assert set(cb["model"]) - set(ca["model"]) == {"predictor.weight", "predictor.bias"}
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
        assert torch.equal(ca["ema"][key], cb["ema"][key]), key
    assert torch.equal(cb["model"]["predictor.weight"], torch.eye(32))  # never used, never updated


def test_predictor_does_not_change_trm_init_and_strips_for_plain_trm():
    model = tiny_model()
    torch.manual_seed(0)
    plain = TRM(model.config)
    state = jepa.trm_state_dict(model.state_dict())
    assert set(state) == set(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(model.predictor.weight, torch.eye(32)) and not model.predictor.bias.any()
    model.reset_parameters()
    assert torch.equal(model.predictor.weight, torch.eye(32))
    plain.load_state_dict(state)  # strict: the stripped dict is exactly a TRM's


# -- the stop-gradient boundary ------------------------------------------------------------------------

def test_stopgrad_target_branch_carries_no_gradient():
    model = tiny_model(stopgrad_target=True)
    _, labels = batch()
    target = model.solution_state(labels, torch.float32)
    assert not target.requires_grad                      # nothing to back-propagate into
    inputs, labels = batch()
    *_, latent = model(inputs, model.initial_carry(4), targets=labels)
    assert latent.requires_grad                          # the online branch and predictor still learn
    latent.backward()
    assert model.predictor.weight.grad.abs().sum() > 0


def test_without_stopgrad_target_branch_reaches_the_network():
    model = tiny_model(stopgrad_target=False)
    _, labels = batch()
    target = model.solution_state(labels, torch.float32)
    assert target.requires_grad
    model.pool(target).sum().backward()                  # the target branch alone, with a loss
    for name, p in model.net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    digits = labels.unique()
    assert model.embed.weight.grad[digits].abs().sum(dim=1).gt(0).all()  # solution tokens embedded


def test_stopgrad_changes_gradient_not_value():
    grads, values = {}, {}
    inputs, labels = batch()
    for stop in (True, False):
        model = tiny_model(stopgrad_target=stop)
        *_, latent = model(inputs, model.initial_carry(4), targets=labels)
        latent.backward()
        values[stop] = latent.detach()
        grads[stop] = torch.cat([p.grad.flatten() for p in model.net.parameters()])
    assert torch.allclose(values[True], values[False])
    assert not torch.allclose(grads[True], grads[False])  # False adds the target branch's gradient


# -- pooling and distances -----------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_pooling_shape_and_positions(pool):
    model = tiny_model(pool=pool)
    state = torch.randn(17, 4, 32)                       # (L = 1 prefix + 16 cells, B, D)
    pooled = model.pool(state)
    assert pooled.shape == (4, 32)
    expected = state[0] if pool == "cls" else state[1:].mean(dim=0)
    assert torch.allclose(pooled, expected)


@pytest.mark.parametrize("pool,state", [("mean", "y"), ("cls", "z")])
def test_normalized_latents_have_unit_norm(pool, state):
    model = tiny_model(pool=pool, state=state, normalize=True)
    inputs, labels = batch()
    y, z = model.deep_recursion(inputs, model.initial_carry(4))
    online = model.pool(y if state == "y" else z)
    target = model.pool(model.solution_state(labels, torch.float32))
    prediction, goal = model.latent_vectors(online, target)
    assert prediction.shape == goal.shape == (4, 32)
    assert torch.allclose(prediction.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(goal.norm(dim=-1), torch.ones(4), atol=1e-5)
    raw = tiny_model(pool=pool, state=state, normalize=False).latent_vectors(online, target)[0]
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4), atol=1e-2)


def test_latent_state_z_with_z_slots_compares_the_sum_of_the_states():
    model = tiny_model(z_slots=3, state="z")
    inputs, labels = batch()
    y, z = model.deep_recursion(inputs, model.initial_carry(4))
    assert z.shape[-1] == 3 * 32
    carry, logits, q_logit, latent = model(inputs, model.initial_carry(4), targets=labels)
    target = model.pool(model.solution_state(labels, torch.float32))
    expected = model.distance(*model.latent_vectors(model.pool(z[..., :32] + z[..., 32:64] + z[..., 64:]), target))
    torch.testing.assert_close(latent, expected.mean())


def test_distances():
    a, b = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    cosine = tiny_model(loss="cosine").distance(a, b)
    mse = tiny_model(loss="mse").distance(a, b)
    assert torch.allclose(cosine, 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1))
    assert torch.allclose(mse, 2 * cosine, atol=1e-5)   # unit vectors: |a - b|^2 = 2 - 2 cos
    assert torch.allclose(mse, ((a - b) ** 2).sum(-1))


# -- a run: folder, log, resume -----------------------------------------------------------------------

def test_run_writes_jepa_folder_and_resumes_exactly(tmp_path, data_dir):
    full = tiny_config(jepa.RUN_CONFIG, tmp_path / "a", data_dir, max_steps=12, eval_every=6)
    jepa.main(full, progress=False)
    run_a = tmp_path / "a" / "runs" / "tiny_trm_sudoku_jepa"
    for name in ("best.pt", "last.pt", "config.json", "log.jsonl"):
        assert (run_a / name).is_file(), name
    assert json.loads((run_a / "config.json").read_text())["training"]["variant"] == "jepa"
    train = read_log(run_a)
    for record in train:
        assert record["latent_loss"] > 0 and 0 < record["latent_share"] < 1
        assert record["loss"] > record["ce_loss"]        # the weighted term is in the total
    assert "predictor.weight" in torch.load(run_a / "last.pt", weights_only=True)["ema"]
    from checkpoint import load_trained  # the evaluation tools load a JEPA checkpoint as a plain TRM
    model, _, weights = load_trained(run_a / "best.pt", torch.device("cpu"))
    assert weights == "EMA" and not hasattr(model, "predictor")

    jepa.main(tiny_config(jepa.RUN_CONFIG, tmp_path / "b", data_dir, max_steps=6, eval_every=6), progress=False)
    jepa.main(tiny_config(jepa.RUN_CONFIG, tmp_path / "b", data_dir, max_steps=12, eval_every=6),
              resume=True, progress=False)
    run_b = tmp_path / "b" / "runs" / "tiny_trm_sudoku_jepa"
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (run_a, run_b))
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    pick = lambda records: [(r["step"], r["loss"], r["latent_loss"]) for r in records]  # noqa: E731
    assert pick(read_log(run_a)) == pick(read_log(run_b))


# -- config errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    ({"training": {"latent_pool": "max"}}, "x.json: training.latent_pool: 'max' must be one of mean, cls"),
    ({"training": {"latent_loss": "l1"}}, "x.json: training.latent_loss: 'l1' must be one of mse, cosine"),
    ({"training": {"latent_state": "x"}}, "x.json: training.latent_state: 'x' must be one of y, z"),
    ({"training": {"latent_loss_weight": -0.5}}, "x.json: training.latent_loss_weight: -0.5 must be >= 0"),
    ({"training": {"variant": "plain"}}, "x.json: training.variant: 'plain'"),
    ({"training": {"latent_pool": "cls"}, "model": {"n_prefix": 0}},
     "x.json: training.latent_pool: 'cls' needs model.n_prefix"),
])
def test_bad_jepa_values_rejected(override, expected):
    config = merge_config(jepa.RUN_CONFIG, override, "x.json")
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        jepa.check_jepa_config(config, "x.json")


def test_cli_rejects_before_any_work(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"training": {"latent_pool": "max", "runs_dir": str(tmp_path / "runs")}}))
    with pytest.raises(SystemExit) as e:
        jepa.cli(["--config", str(path)])
    assert str(e.value.code).startswith(f"error: {path}: training.latent_pool: 'max'")
    path.write_text('{"training": {"normalize_latent": "yes"}}')
    with pytest.raises(SystemExit, match="training.normalize_latent: expected bool, got str"):
        jepa.cli(["--config", str(path)])
    assert not (tmp_path / "runs").exists()


def test_jepa_run_config_is_the_plain_one_plus_its_own_keys():
    """train_trm_jepa.py keeps its own RUN_CONFIG (scripts do not import scripts): it must equal
    train_trm.py's except for the run name and the JEPA keys."""
    import train_trm
    import train_trm_jepa
    plain, jepa = train_trm.RUN_CONFIG, train_trm_jepa.RUN_CONFIG
    assert jepa["model"] == plain["model"] and jepa["data"] == plain["data"]
    own = {k: v for k, v in jepa["training"].items() if k not in train_trm_jepa.JEPA_KEYS and k != "run_name"}
    assert own == {k: v for k, v in plain["training"].items() if k != "run_name"}
    assert list(own) == [k for k in plain["training"] if k != "run_name"]  # same order, for the reader
    assert set(jepa["training"]) - set(plain["training"]) == set(train_trm_jepa.JEPA_KEYS)
