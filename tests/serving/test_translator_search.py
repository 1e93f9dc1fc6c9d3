"""Beam search and the step loop's batch bookkeeping, against references, with a fake model in numpy.

The fake decoder checks what a real one cannot: that every row's cache holds exactly its own
positions, in order, and that its cross-attention keys are its own source. Its next-token
distribution is a fixed function of (source, history), so a sentence decoded inside a busy batch
must come out exactly as when decoded alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math

import numpy as np
import pytest

from myelin_serving.translator.batch import ActiveBatch, Job
from myelin_serving.translator.search import BeamSearch, Hypothesis, SearchOptions, length_penalty
from myelin_serving.translator.steps import StepConfig, TranslatorSteps

PAD, BOS, EOS = 0, 1, 2
VOCAB = 9


def fake_log_probs(source: tuple[int, ...], history: tuple[int, ...]) -> np.ndarray:
    """A peaked, deterministic next-token distribution; EOS grows likelier with length."""
    seed = int.from_bytes(hashlib.sha256(repr((source, history)).encode()).digest()[:8], "little")
    logits = np.random.default_rng(seed).normal(0, 2.0, VOCAB)
    logits[EOS] += len(history) - len(source)
    logits -= logits.max()
    return (logits - np.log(np.exp(logits).sum())).astype(np.float32)


class FakeGraphs:
    """Encoder and decoder step with the real graphs' shapes; keys carry (token, position)."""

    def __init__(self) -> None:
        self.steps: list[int] = []  # rows per decoder call
        self.encoder_calls: list[int] = []

    def encode(self, source_ids: np.ndarray, source_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.encoder_calls.append(len(source_ids))
        keys = np.stack([source_ids, source_mask], -1).astype(np.float32)[:, None, None]  # (n, 1, 1, S, 2)
        return keys, keys.copy()

    def decode(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, positions = feeds["input_ids"][:, 0], feeds["position_ids"][:, 0]
        past, past_mask = feeds["past_keys"], feeds["past_mask"]
        cross, source_mask = feeds["cross_keys"], feeds["source_mask"]
        assert past.shape[3] == past_mask.shape[1] and cross.shape[3] == source_mask.shape[1]
        self.steps.append(len(tokens))
        new = np.stack([tokens, positions], -1).astype(np.float32)[:, None, None, None]  # (N, 1, 1, 1, 2)
        present = np.concatenate([past, new], axis=3)
        out = np.empty((len(tokens), VOCAB), dtype=np.float32)
        for row in range(len(tokens)):
            valid = present[row, 0, 0][np.append(past_mask[row], True)]  # (count, 2)
            assert list(valid[:, 1]) == list(range(positions[row] + 1)), "a row's cache is not its own history"
            assert valid[0, 0] == BOS
            src = cross[row, 0, 0]
            assert np.array_equal(src[:, 1].astype(bool), source_mask[row])
            source = tuple(int(t) for t in src[source_mask[row], 0])
            history = tuple(int(t) for t in valid[1:, 0])
            out[row] = fake_log_probs(source, history)
        return out, present, present.copy()


def decode_alone(source: list[int], options: SearchOptions) -> Hypothesis:
    """Reference: the same search fed directly, one sentence, no batch."""
    search = BeamSearch(options, eos_id=EOS, banned=(PAD, BOS))
    histories: list[tuple[int, ...]] = [()]
    src = (*source, EOS)
    while not search.done:
        log_probs = np.stack([fake_log_probs(src, h) for h in histories])
        parents, tokens = search.advance(log_probs)
        histories = [histories[p] + (int(t),) for p, t in zip(parents, tokens, strict=True)]
    return search.best()


def exhaustive_best(source: list[int], max_length: int, alpha: float) -> tuple[tuple[int, ...], float]:
    src = (*source, EOS)
    best: tuple[tuple[int, ...], float] = ((), -math.inf)
    real = [t for t in range(VOCAB) if t not in (PAD, BOS, EOS)]
    for n in range(max_length):
        for history in itertools.product(real, repeat=n):
            logp = sum(float(fake_log_probs(src, history[:i])[history[i]]) for i in range(n))
            logp += float(fake_log_probs(src, history)[EOS])
            score = logp / length_penalty(n + 1, alpha)
            if score > best[1]:
                best = (history, score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_a_wide_enough_beam_finds_the_exhaustive_optimum(alpha: float) -> None:
    global VOCAB
    saved, VOCAB = VOCAB, 6  # 3 real tokens: every sequence up to 4 tokens fits in the beam
    try:
        for source in ([3, 4], [5], [4, 4, 3]):
            hypothesis = decode_alone(source, SearchOptions(beam_size=200, max_length=4, length_penalty=alpha))
            tokens, score = exhaustive_best(source, 4, alpha)
            assert hypothesis.finished and hypothesis.tokens == tokens
            assert hypothesis.score == pytest.approx(score, abs=1e-4)
    finally:
        VOCAB = saved


def test_beam_one_is_greedy_and_wider_beams_score_no_worse() -> None:
    for source in ([3, 4, 5], [6], [7, 8, 3, 4]):
        src = (*source, EOS)
        history: tuple[int, ...] = ()
        logp = 0.0
        for _ in range(20):
            lp = fake_log_probs(src, history)
            lp[[PAD, BOS]] = -np.inf
            token = int(lp.argmax())
            logp += float(lp[token])
            if token == EOS:
                break
            history += (token,)
        greedy = decode_alone(source, SearchOptions(1, 20, 0.0))
        assert greedy.tokens == history and greedy.log_probability == pytest.approx(logp, abs=1e-4)
        wide = decode_alone(source, SearchOptions(5, 20, 0.0))
        assert wide.score >= greedy.score - 1e-9


def test_max_length_stops_the_search_and_says_so() -> None:
    hypothesis = decode_alone([3, 4, 5, 6, 7, 8], SearchOptions(beam_size=3, max_length=2, length_penalty=0.6))
    assert len(hypothesis.tokens) <= 2 and hypothesis.length <= 2


def test_batch_of_sentences_joining_at_different_steps_matches_each_alone() -> None:
    rng = np.random.default_rng(0)
    sources = [[int(t) for t in rng.integers(3, VOCAB, rng.integers(1, 7))] for _ in range(12)]
    options = [
        SearchOptions(int(rng.integers(1, 5)), int(rng.integers(3, 12)), float(rng.choice([0.0, 0.6]))) for _ in sources
    ]
    graphs = FakeGraphs()
    batch = ActiveBatch(layers=1, heads=1, head_dim=2, bos_id=BOS)
    done: dict[int, Hypothesis] = {}
    waiting = list(range(len(sources)))
    step = 0
    while waiting or len(batch):
        # Two new sentences join every other step: a batch of rows of different ages and sources.
        if waiting and step % 2 == 0:
            joining, waiting = waiting[:2], waiting[2:]
            jobs = [
                Job(np.array([*sources[i], EOS]), BeamSearch(options[i], eos_id=EOS, banned=(PAD, BOS)), owner=i)
                for i in joining
            ]
            width = max(len(j.source) for j in jobs)
            ids = np.zeros((len(jobs), width), dtype=np.int64)
            for r, j in enumerate(jobs):
                ids[r, : len(j.source)] = j.source
            batch.join(jobs, *graphs.encode(ids, ids != PAD), ids != PAD)
        if len(batch):
            for job in batch.advance(*graphs.decode(batch.feeds())):
                done[job.owner] = job.search.best()
        step += 1
    assert max(graphs.steps) > 4, "the test should exercise shared steps"
    for i, source in enumerate(sources):
        assert done[i] == decode_alone(source, options[i])


def test_removed_sentences_leave_the_others_untouched() -> None:
    graphs = FakeGraphs()
    batch = ActiveBatch(layers=1, heads=1, head_dim=2, bos_id=BOS)
    sources = [[3, 4], [5, 6, 7], [8]]
    opts = SearchOptions(3, 10, 0.6)
    jobs = [
        Job(np.array([*s, EOS]), BeamSearch(opts, eos_id=EOS, banned=(PAD, BOS)), owner=i)
        for i, s in enumerate(sources)
    ]
    ids = np.zeros((3, 4), dtype=np.int64)
    for r, j in enumerate(jobs):
        ids[r, : len(j.source)] = j.source
    batch.join(jobs, *graphs.encode(ids, ids != PAD), ids != PAD)
    finished = batch.advance(*graphs.decode(batch.feeds()))
    removed = batch.remove(lambda job: job.owner == 1)
    assert [j.owner for j in removed] == [1] and not finished
    results = {}
    while len(batch):
        for job in batch.advance(*graphs.decode(batch.feeds())):
            results[job.owner] = job.search.best()
    assert results == {0: decode_alone(sources[0], opts), 2: decode_alone(sources[2], opts)}


def test_the_loop_batches_concurrent_requests_into_shared_steps() -> None:
    async def main() -> tuple[list[list[Hypothesis]], FakeGraphs]:
        graphs = FakeGraphs()
        config = StepConfig(
            layers=1, heads=1, head_dim=2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_active_rows=64, max_pending=100
        )
        loop = TranslatorSteps(graphs, config, model="fake")
        opts = SearchOptions(2, 12, 0.6)
        requests = [[(np.array([3 + i, 4, EOS]), opts), (np.array([5, 6 + i % 3, 7, EOS]), opts)] for i in range(6)]
        answers = await asyncio.gather(*(loop.translate(r, timeout=10) for r in requests))
        await loop.close()
        return answers, graphs

    answers, graphs = asyncio.run(main())
    for i, answer in enumerate(answers):
        assert answer == [
            decode_alone([3 + i, 4], SearchOptions(2, 12, 0.6)),
            decode_alone([5, 6 + i % 3, 7], SearchOptions(2, 12, 0.6)),
        ]
    # 12 sentences, admitted together: one encoder call, and far fewer decoder steps than 12 alone would take.
    assert graphs.encoder_calls[0] == 12
    assert max(graphs.steps) >= 12
