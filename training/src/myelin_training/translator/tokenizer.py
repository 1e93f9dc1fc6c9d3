"""The subword vocabulary: one BPE model shared by English and French, trained with `tokenizers`.

Trained on the training split only (both sides), saved as `tokenizer.json` beside the model and
loaded by the service with the same library. NFKC normalisation (it turns French's narrow
no-break spaces before `!?:;` into plain spaces), Metaspace pre-tokenisation so decoding restores
the spaces exactly, and four special tokens at fixed ids that the model and the service rely on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    for token, expected in zip(SPECIALS, range(4), strict=True):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"tokenizer put {token} at id {tokenizer.token_to_id(token)}, expected {expected}")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Subword ids without specials; the model adds BOS/EOS where it needs them."""
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def decode(tokenizer: Tokenizer, ids: Iterable[int]) -> str:
    return tokenizer.decode([i for i in ids if i >= len(SPECIALS)])


def load(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
