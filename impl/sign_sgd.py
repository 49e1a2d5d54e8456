"""The puzzle embeddings' optimiser: sparse sign-SGD with decoupled weight decay, as the official
CastedSparseEmbeddingSignSGD_Distributed (models/sparse_embedding.py).

After a training step's backward, the rows that the step looked up (trm.PuzzleEmbedding records
them with their gradients) are gathered from every process (torchrun), their gradients summed
per identifier over the global batch, and only those rows change:

    row <- row * (1 - lr * weight_decay) - lr * sign(summed gradient)

Rows not in the batch are untouched. The update needs no state besides the table itself (a
buffer of the model, so it is in every checkpoint), and every process applies the same update to
its copy. The official code found Adam close to sign-SGD when the gradient is this sparse.
"""
from __future__ import annotations

import torch

import distributed
from trm import PuzzleEmbedding


class SparseSignSGD:
    def __init__(self, embedding: PuzzleEmbedding, weight_decay: float, d: distributed.Dist = distributed.Dist()) -> None:
        self.embedding, self.weight_decay, self.d = embedding, weight_decay, d

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """Update the rows looked up since the last step, and forget them."""
        looked_up, self.embedding.looked_up = self.embedding.looked_up, []
        if not looked_up:
            return
        grads = torch.cat([rows.grad if rows.grad is not None else torch.zeros_like(rows) for rows, _ in looked_up])
        ids = torch.cat([ids for _, ids in looked_up]).long()
        grads = distributed.gather_cat(grads, self.d)                  # (global batch, D), rank order
        ids = distributed.gather_cat(ids, self.d)
        unique, inverse = ids.unique(return_inverse=True)
        summed = torch.zeros(len(unique), grads.shape[1], dtype=grads.dtype, device=grads.device)
        summed.index_add_(0, inverse, grads)                            # one gradient per identifier
        table = self.embedding.weight
        table[unique] = table[unique] * (1.0 - lr * self.weight_decay) - lr * torch.sign(summed).to(table.dtype)
