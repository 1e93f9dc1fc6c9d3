"""Prompt encoding and streaming decoding with the model's own tokenizer.json (`tokenizers`).

Streaming text token by token needs care: a byte-level BPE token may end in the middle of a UTF-8
character, and a stop sequence may span tokens. `IncrementalDecoder` only releases text once it
is complete; `StopMatcher` holds back any tail that could still become a stop sequence, so a
client never receives text that is later taken back.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from myelin_serving.errors import InvalidArgument

REPLACEMENT = "\ufffd"


class TextCodec:
    def __init__(self, path: Path, *, unk_id: int | None, start_text: str) -> None:
        self.tokenizer = Tokenizer.from_file(str(path))
        self.vocab_size = self.tokenizer.get_vocab_size()
        # A token covers at most this many characters: a text longer than N of them is more than N tokens.
        self.longest_token = max(len(token) for token in self.tokenizer.get_vocab())
        self.unk_id = unk_id
        self.start_text = start_text
        # No token covers more characters than this: a longer prompt cannot fit the token limit.
        self.max_token_chars = max(len(token) for token in self.tokenizer.get_vocab())

    def encode_prompt(self, prompt: str, max_tokens: int) -> list[int]:
        """The prompt's token ids; refused before tokenizing when it cannot fit in `max_tokens`."""
        text = prompt or self.start_text
        budget = max_tokens * self.max_token_chars
        if len(text) > budget:
            raise InvalidArgument(
                f"the prompt is {len(text):,} characters; this model takes at most {max_tokens} tokens, which "
                f"never hold more than {budget:,} characters: shorten it"
            )
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        ids = list(encoding.ids)
        if self.unk_id is not None and self.unk_id in ids:
            unknown = sorted({text[a:b] for i, (a, b) in zip(ids, encoding.offsets, strict=True) if i == self.unk_id})
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise InvalidArgument(f"the prompt has characters this model's vocabulary lacks: {shown}; remove them")
        if not ids:
            raise InvalidArgument("the prompt encodes to no tokens; send some text")
        return ids

    def encode_text(self, text: str) -> list[int]:
        """Every token of `text`, unknown characters included (as the training's evaluation counts them)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class IncrementalDecoder:
    """Text of the generated tokens, released piece by piece once each piece is complete."""

    def __init__(self, codec: TextCodec) -> None:
        self._codec = codec
        self._ids: list[int] = []
        self._prefix = 0  # tokens before this index are released; decode from here for context
        self._read = 0

    def add(self, token: int) -> str:
        self._ids.append(token)
        prefix_text = self._codec.decode(self._ids[self._prefix : self._read])
        text = self._codec.decode(self._ids[self._prefix :])
        if len(text) > len(prefix_text) and not text.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._codec.decode(self._ids[self._prefix : self._read])
        text = self._codec.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(prefix_text) :]


class StopMatcher:
    """Finds the first stop sequence in streamed text; releases only text that cannot start one."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text = ""  # everything generated so far
        self._released = 0
        self.matched: str | None = None

    def feed(self, piece: str) -> str:
        """Add `piece`; return the text that is now safe to send. After a match, `matched` is set."""
        if self.matched is not None:
            return ""
        self._text += piece
        if not self._stops:
            return self._release(len(self._text))
        start = max(0, self._released - self._longest + 1)
        found = [(i, s) for s in self._stops if (i := self._text.find(s, start)) >= 0]
        if found:
            index, stop = min(found)
            self.matched = stop
            return self._release(index)
        return self._release(len(self._text) - self._holdback())

    def flush(self) -> str:
        """At the end without a match: release what was held back."""
        return "" if self.matched is not None else self._release(len(self._text))

    @property
    def text(self) -> str:
        """The output as the caller sees it (up to any stop sequence)."""
        return self._text[: self._released]

    def _holdback(self) -> int:
        # The longest tail of the text that is a proper prefix of some stop sequence.
        for n in range(min(self._longest - 1, len(self._text)), 0, -1):
            tail = self._text[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._released)
        piece = self._text[self._released : upto]
        self._released = upto
        return piece
