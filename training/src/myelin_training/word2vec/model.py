"""word2vec: two embedding tables and a logistic loss over dot products.

    h = mean of input vectors      skip-gram: the one context word; CBOW: the window's words
    f = sigmoid(h . u_k)           u_k: output rows of the target and its negatives (or Huffman nodes)
    loss = -sum_k w_k [y_k log f + (1 - y_k) log (1 - f)]

Training does not go through autograd: `sgd_step` applies the closed-form gradient of that loss
to the rows a batch touches (index_add_, i.e. sparse updates), summed over the batch's examples so
each pair moves the vectors as much as one step of word2vec.c does. `loss` is the same function
written for autograd; a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Word2VecConfig:
    vocab_size: int = 0
    dim: int = 100
    arch: str = "skipgram"  # skipgram | cbow
    loss: str = "ns"  # ns (negative sampling) | hs (hierarchical softmax)
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    min_count: int = 5
    epochs: int = 5
    alpha: float = 0.0  # starting learning rate; 0: word2vec.c's default (0.025 skip-gram, 0.05 CBOW)
    min_alpha_ratio: float = 1e-4  # the rate decays linearly to alpha * this, as in word2vec.c
    # Examples per update. Smaller batches are closer to word2vec.c's one-pair-at-a-time SGD (256 scored
    # half a point higher on analogies than 1,024 on the benchmark corpus) at about the same speed.
    batch_size: int = 256
    # A row touched more than this many times in one batch moves as if touched this many times, by
    # the mean of its gradients. word2vec.c applies a frequent word's updates one after another,
    # each seeing the last; summing hundreds of them taken at one snapshot overshoots and diverges.
    row_cap: int = 32
    threads: int = 2

    def __post_init__(self) -> None:
        if self.arch not in ("skipgram", "cbow"):
            raise ValueError(f"arch must be skipgram or cbow, not {self.arch!r}")
        if self.loss not in ("ns", "hs"):
            raise ValueError(f"loss must be ns or hs, not {self.loss!r}")
        if not self.alpha:
            self.alpha = 0.05 if self.arch == "cbow" else 0.025


class Word2Vec(nn.Module):
    def __init__(self, config: Word2VecConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        v, d = config.vocab_size, config.dim
        # Input vectors: word2vec.c's uniform(-0.5/d, 0.5/d); one extra all-zero row pads CBOW windows.
        weight = (torch.rand(v + 1, d, generator=generator) - 0.5) / d
        weight[v] = 0
        self.input = nn.Embedding(v + 1, d, padding_idx=v, sparse=True, _weight=weight)
        # Output vectors (negative sampling: one per word; hierarchical softmax: one per inner node): zeros.
        self.output = nn.Embedding(v if config.loss == "ns" else max(v - 1, 1), d, sparse=True)
        nn.init.zeros_(self.output.weight)

    @property
    def pad(self) -> int:
        return self.config.vocab_size

    def hidden(self, inputs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        # (B, C) input rows, (B,) real rows per example -> (B, d) their mean
        if inputs.shape[1] == 1:
            return self.input.weight.index_select(0, inputs[:, 0])
        summed = F.embedding_bag(inputs, self.input.weight, mode="sum", padding_idx=self.pad)
        return summed / counts.unsqueeze(1)

    def loss(
        self,
        inputs: torch.Tensor,
        counts: torch.Tensor,
        rows: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Summed logistic loss of a batch, for autograd (tests, reporting)."""
        h = self.hidden(inputs, counts)  # (B, d)
        logits = torch.bmm(self.output(rows), h.unsqueeze(2)).squeeze(2)  # (B, K)
        return F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum")

    @torch.no_grad()
    def sgd_step(
        self,
        inputs: torch.Tensor,
        counts: torch.Tensor,
        rows: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor,
        lr: float,
        *,
        input_scale: torch.Tensor | None = None,
        output_scale: torch.Tensor | None = None,
        with_loss: bool = True,
    ) -> torch.Tensor | None:
        """One SGD step on the rows the batch touches; returns the batch's summed loss if asked for.

        `input_scale` (B, C) and `output_scale` (B, K) scale each occurrence's update of its row
        (see `pairs.cap_scales`); None means 1.
        """
        w_in, w_out = self.input.weight, self.output.weight
        b, c = inputs.shape
        d = w_in.shape[1]
        h = self.hidden(inputs, counts)  # (B, d)
        flat_rows = rows.reshape(-1)
        u = w_out.index_select(0, flat_rows).view(*rows.shape, d)  # (B, K, d)
        logits = torch.linalg.vecdot(u, h.unsqueeze(1))  # (B, K); faster than bmm's tiny products on CPU
        g = (labels - torch.sigmoid(logits)) * weights  # (B, K): -dloss/dlogit
        loss = (
            F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum") if with_loss else None
        )
        g *= lr
        grad_h = torch.bmm(g.unsqueeze(1), u).squeeze(1)  # (B, d)
        g_out = g if output_scale is None else g * output_scale
        w_out.index_add_(0, flat_rows, (g_out.unsqueeze(2) * h.unsqueeze(1)).reshape(-1, d))
        if c == 1:
            w_in.index_add_(0, inputs[:, 0], grad_h if input_scale is None else grad_h * input_scale)
        else:
            # CBOW: every context word gets the whole gradient of the mean, as in word2vec.c and gensim.
            spread = grad_h.unsqueeze(1).expand(b, c, d)
            if input_scale is not None:
                spread = spread * input_scale.unsqueeze(2)
            w_in.index_add_(0, inputs.reshape(-1), spread.reshape(-1, d))
            w_in[self.pad].zero_()
        return loss
