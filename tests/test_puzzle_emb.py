"""Puzzle embeddings: a row per puzzle identifier at prefix position 0, trained sparsely by
sign-SGD (only the rows in the batch change), shared with the EMA; one identifier keeps the
Sudoku model exactly as it was."""
import copy

import pytest
import torch

from arch import model_config
from loop import EMA
from sign_sgd import SparseSignSGD
from trm import TRM, TRMConfig, count_parameters, trm_loss


def config(**overrides) -> TRMConfig:
    base = dict(vocab_size=6, seq_len=9, hidden_size=16, num_heads=2, T=2, n=2, N_sup=4, n_prefix=2)
    return model_config({**base, **overrides})


def test_one_identifier_is_the_shared_prefix_parameter_as_before():
    one = TRM(config())
    assert one.puzzle_emb is None and one.prefix.shape == (1, 16)
    assert "prefix" in dict(one.named_parameters()) and not any("puzzle_emb" in k for k in one.state_dict())
    many = TRM(config(num_puzzle_identifiers=7))
    assert many.prefix is None and many.puzzle_emb.weight.shape == (7, 16)
    assert not many.puzzle_emb.weight.any()                                    # zero init (official)
    assert "puzzle_emb.weight" in many.state_dict()                            # in checkpoints
    assert "puzzle_emb.weight" not in dict(many.named_parameters())            # not in the main optimiser
    assert count_parameters(many) == count_parameters(one) - 16
    every = TRM(config(num_puzzle_identifiers=7, prefix_learned="all", n_prefix=3))
    assert every.prefix.shape == (2, 16)                                       # positions 1..2 shared, learned
    with pytest.raises(ValueError, match="model.n_prefix: 0 must be >= 1: the 7 puzzle identifiers"):
        config(num_puzzle_identifiers=7, n_prefix=0)


def test_position_zero_is_the_row_of_each_examples_identifier():
    torch.manual_seed(0)
    model = TRM(config(num_puzzle_identifiers=5)).eval()
    model.puzzle_emb.weight.copy_(torch.randn(5, 16))
    inputs = torch.randint(0, 6, (3, 9))
    ids = torch.tensor([4, 0, 2])
    x = model.input_embedding(inputs, ids)                                     # (L, B, D)
    assert torch.equal(x[0], model.embed_scale * model.puzzle_emb.weight[ids])
    assert not x[1].any()                                                      # the other prefix positions: zeros
    assert torch.equal(model.input_embedding(inputs)[0], model.input_embedding(inputs, torch.zeros(3).long())[0])
    logits = [model(inputs, model.initial_carry(3), torch.tensor(i))[1] for i in ([4, 0, 2], [1, 1, 1])]
    assert not torch.allclose(logits[0], logits[1])                            # the identifiers matter
    assert torch.equal(model.predict(inputs, N_sup=1, puzzle_ids=ids).answers, logits[0].argmax(-1))


def test_sign_sgd_changes_only_the_rows_in_the_batch_by_the_sign_of_their_summed_gradient():
    torch.manual_seed(0)
    model = TRM(config(num_puzzle_identifiers=10)).train()
    model.puzzle_emb.weight.copy_(torch.randn(10, 16))
    before = model.puzzle_emb.weight.clone()
    inputs, labels = torch.randint(0, 6, (4, 9)), torch.randint(2, 6, (4, 9))
    ids = torch.tensor([2, 5, 5, 7])                                           # 5 twice: its gradients add up

    # The reference: the dense gradient of the whole table, by autograd through the lookup.
    reference = copy.deepcopy(model)
    reference.puzzle_emb.weight.requires_grad_(True)
    _, logits, q = reference(inputs, reference.initial_carry(4), ids)
    trm_loss(logits, q, labels).loss.backward()
    dense = reference.puzzle_emb.weight.grad

    _, logits, q = model(inputs, model.initial_carry(4), ids)
    trm_loss(logits, q, labels).loss.backward()
    assert len(model.puzzle_emb.looked_up) == 1
    lr, decay = 0.1, 0.5
    SparseSignSGD(model.puzzle_emb, weight_decay=decay).step(lr)
    after = model.puzzle_emb.weight
    untouched = [i for i in range(10) if i not in (2, 5, 7)]
    assert torch.equal(after[untouched], before[untouched])                    # bit for bit
    assert dense[untouched].abs().sum() == 0 and (dense[[2, 5, 7]] != 0).all()
    expected = before[[2, 5, 7]] * (1 - lr * decay) - lr * torch.sign(dense[[2, 5, 7]])
    assert torch.allclose(after[[2, 5, 7]], expected, atol=1e-6)
    assert model.puzzle_emb.looked_up == []                                    # consumed by the step


def test_no_rows_are_recorded_without_gradient_or_in_eval_mode():
    model = TRM(config(num_puzzle_identifiers=3))
    inputs, ids = torch.randint(0, 6, (2, 9)), torch.tensor([1, 2])
    with torch.no_grad():
        model(inputs, model.initial_carry(2), ids)
    model.eval()
    model(inputs, model.initial_carry(2), ids)
    model.predict(inputs, N_sup=2, puzzle_ids=ids)
    assert model.puzzle_emb.looked_up == []


def test_the_ema_copy_shares_the_table_and_averages_only_parameters():
    model = TRM(config(num_puzzle_identifiers=4))
    ema = EMA(model, 0.9, shared=[model.puzzle_emb.weight])
    assert ema.model.puzzle_emb.weight is model.puzzle_emb.weight              # evaluation reads the live rows
    assert ema.model.embed.weight is not model.embed.weight
    model.puzzle_emb.weight[1] = 3.0
    ema.update(model)
    assert (ema.model.puzzle_emb.weight[1] == 3.0).all()
