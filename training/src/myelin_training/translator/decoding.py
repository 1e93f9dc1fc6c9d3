"""Greedy decoding in PyTorch through the incremental decoder (validation BLEU), and BLEU/chrF.

Beam search lives in the service (myelin_serving.translator.search), where it runs on the exported
graphs; training needs only a cheap, monotone signal to pick the best checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sacrebleu
import torch
from tokenizers import Tokenizer

from myelin_training.translator import tokenizer as tk
from myelin_training.translator.batches import source_tensors
from myelin_training.translator.model import Translator


def default_max_length(source_tokens: int, limit: int) -> int:
    """How many target tokens to allow for a source of this length (the service uses the same rule)."""
    return min(limit, 2 * source_tokens + 10)


@torch.no_grad()
def greedy(
    model: Translator,
    sources: Sequence[Sequence[int]],
    device: torch.device,
    *,
    autocast: bool = False,
) -> list[list[int]]:
    """Token ids of the argmax translation of each source (no specials)."""
    model.eval()
    limit = model.config.max_positions - 1
    source_ids, source_mask = source_tensors([list(s)[: model.config.max_positions - 1] for s in sources])
    source_ids, source_mask = source_ids.to(device), source_mask.to(device)
    b = source_ids.shape[0]
    # Each row stops at its own limit, from its length without the EOS (as the service does).
    row_limits = torch.tensor([default_max_length(len(s[:limit]), limit) for s in sources], device=device)
    max_length = int(row_limits.max())
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        memory = model.encode(source_ids, source_mask)
        cross_keys, cross_values = model.cross_keys_values(memory)
        past_keys, past_values, past_mask = model.empty_cache(b, device)
        past_keys, past_values = past_keys.to(cross_keys.dtype), past_values.to(cross_keys.dtype)
        tokens = torch.full((b, 1), tk.BOS_ID, dtype=torch.long, device=device)
        out = torch.zeros(b, 0, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for step in range(max_length):
            positions = torch.full((b, 1), step, dtype=torch.long, device=device)
            states, k, v = model.decode(
                tokens, positions, past_keys, past_values, past_mask, cross_keys, cross_values, source_mask
            )
            past_keys, past_values = torch.cat([past_keys, k], 3), torch.cat([past_values, v], 3)
            past_mask = torch.cat([past_mask, torch.ones(b, 1, dtype=torch.bool, device=device)], 1)
            logits = model.logits(states[:, -1]).float()  # (B, V)
            logits[:, [tk.PAD_ID, tk.BOS_ID]] = -torch.inf  # never generated (the service bans them too)
            tokens = logits.argmax(-1, keepdim=True)  # (B, 1)
            tokens = torch.where(done[:, None], tk.PAD_ID, tokens)
            out = torch.cat([out, tokens], 1)
            done |= (tokens[:, 0] == tk.EOS_ID) | (row_limits <= step + 1)
            if bool(done.all()):
                break
    result = []
    for row in out.tolist():
        ids = row[: row.index(tk.EOS_ID)] if tk.EOS_ID in row else row
        result.append([i for i in ids if i != tk.PAD_ID])
    return result


def translate_greedy(
    model: Translator,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    device: torch.device,
    *,
    batch_size: int = 128,
    autocast: bool = False,
) -> list[str]:
    sources = tk.encode(tokenizer, list(sentences))
    order = np.argsort([len(s) for s in sources], kind="stable")  # similar lengths share a batch
    out: list[str] = [""] * len(sources)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        for j, ids in zip(chunk, greedy(model, [sources[j] for j in chunk], device, autocast=autocast), strict=True):
            out[j] = tk.decode(tokenizer, ids)
    return out


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacreBLEU BLEU (13a tokenisation) and chrF, one reference per hypothesis."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}
