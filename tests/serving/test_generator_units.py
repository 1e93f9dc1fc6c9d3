"""The generator's domain logic without gRPC: sampling, stop sequences, streaming text, batched caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from myelin_serving.errors import InvalidArgument
from myelin_serving.generator.cache import KVCacheBatch, StateBatch
from myelin_serving.generator.sampling import Sampler, SamplingParams, sample_rows
from myelin_serving.generator.text import IncrementalDecoder, StopMatcher, TextCodec
from myelin_serving.runtime import OnnxGraph, RuntimeOptions


def sample_many(params: SamplingParams, logits: np.ndarray, n: int = 2000) -> np.ndarray:
    sampler = Sampler(params.validated(logits.size), logits.size, [], [])
    return np.array([sampler(logits) for _ in range(n)])


def test_sampler_is_deterministic_per_seed_and_respects_filters() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    a = sample_many(SamplingParams(seed=7), logits)
    assert np.array_equal(a, sample_many(SamplingParams(seed=7), logits))
    assert not np.array_equal(a, sample_many(SamplingParams(seed=8), logits))
    # plain sampling follows the distribution
    assert np.bincount(a, minlength=4) / len(a) == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.04)
    assert set(sample_many(SamplingParams(top_k=2, seed=1), logits)) == {0, 1}
    assert set(sample_many(SamplingParams(top_p=0.7, seed=1), logits)) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert set(sample_many(SamplingParams(top_p=0.4, seed=1), logits)) == {0}
    assert set(sample_many(SamplingParams(temperature=0.0, seed=1), logits, 20)) == {0}
    # a low temperature sharpens, a high one flattens
    cold = np.mean(sample_many(SamplingParams(temperature=0.3, seed=2), logits) == 0)
    hot = np.mean(sample_many(SamplingParams(temperature=3.0, seed=2), logits) == 0)
    assert cold > 0.8 > 0.5 > hot


def test_repetition_penalty_and_banned_tokens() -> None:
    logits = np.array([2.0, 1.9, -1.0], dtype=np.float32)
    greedy = SamplingParams(temperature=0.0, repetition_penalty=2.0, seed=0)
    sampler = Sampler(greedy, 3, prompt=[0], banned=[])
    assert sampler(logits) == 1  # token 0 was in the prompt: 2.0 / 2 < 1.9
    assert sampler(logits) == 0  # now token 1 is penalised too: 1.0 > 0.95
    banned = Sampler(SamplingParams(temperature=0.0, seed=0), 3, prompt=[], banned=[0])
    assert banned(logits) == 1


def test_a_step_samples_its_rows_together_as_each_would_alone() -> None:
    """sample_rows draws plain-temperature rows in one set of numpy calls and the others one by one;
    every row gets the token its own sampler would give it alone, whatever else is in the step."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (40, 6, 30)).astype(np.float32)  # 40 steps of 6 rows
    params = [
        SamplingParams(temperature=0.8, seed=1),
        SamplingParams(temperature=1.3, seed=2),
        SamplingParams(temperature=0.7, top_k=5, seed=3),
        SamplingParams(temperature=0.9, top_p=0.8, seed=4),
        SamplingParams(temperature=0.0, seed=5),
        SamplingParams(temperature=1.0, repetition_penalty=1.3, seed=6),
    ]

    def samplers() -> list[Sampler]:
        return [Sampler(p, 30, [1, 2], [7]) for p in params]

    alone = samplers()
    expected = [[alone[r](logits[t, r]) for r in range(6)] for t in range(40)]
    together = samplers()
    assert [s.plain for s in together] == [True, True, False, False, False, False]
    assert [sample_rows(together, logits[t]) for t in range(40)] == expected
    # the plain rows alone in a step of their own, and in the other order
    pair = samplers()[:2]
    assert [sample_rows(pair[::-1], logits[t, 1::-1]) for t in range(40)] == [e[1::-1] for e in expected]
    assert all(7 not in row for row in expected)  # banned


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(temperature=-0.1), "temperature"),
        (SamplingParams(temperature=float("nan")), "temperature"),
        (SamplingParams(top_k=5), "top_k"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_bad_sampling_parameters(params: SamplingParams, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        params.validated(4)


def test_unseeded_requests_get_a_seed_to_report() -> None:
    seeds = {SamplingParams().validated(4).seed for _ in range(5)}
    assert None not in seeds and len(seeds) == 5


def test_stop_matcher_holds_back_partial_matches_and_cuts_at_the_stop() -> None:
    matcher = StopMatcher(["END", "\n\n"])
    released = [matcher.feed(p) for p in ["Hello E", "N", "x and E", "N", "D", " more"]]
    assert released == ["Hello ", "", "ENx and ", "", "", ""]
    assert matcher.matched == "END" and matcher.text == "Hello ENx and "
    plain = StopMatcher([])
    assert plain.feed("abc") == "abc" and plain.flush() == ""
    held = StopMatcher(["xyz"])
    assert held.feed("abx") == "ab" and held.flush() == "x" and held.matched is None


def test_incremental_decoder_never_splits_a_character(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([])
    from tokenizers import trainers

    tokenizer.train_from_iterator(
        ["plain text"], trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    codec = TextCodec(tmp_path / "tokenizer.json", unk_id=None, start_text="\n")
    text = "é€😀 ok"
    ids = codec.encode_prompt(text, max_tokens=64)
    assert len(ids) > len(text)  # multi-byte characters take several byte tokens
    decoder = IncrementalDecoder(codec)
    pieces = [decoder.add(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == text
    assert all("\ufffd" not in p for p in pieces)


def _step_graph(repository: Path, name: str) -> tuple[OnnxGraph, dict]:
    manifest = json.loads((repository / name / "1" / "model.json").read_text())
    return OnnxGraph(repository / name / "1" / "step.onnx", RuntimeOptions("cpu", 1)), manifest


def _kv_batch(repository: Path) -> tuple[KVCacheBatch, OnnxGraph]:
    """A KVCacheBatch on the GPT's step graph (two threads), and the graph on one thread."""
    lone, manifest = _step_graph(repository, "generator-gpt-shakespeare")
    decoder = manifest["decoder"]
    batch = KVCacheBatch(
        OnnxGraph(lone.path, RuntimeOptions("cpu", 2)),
        inputs=decoder["cache_inputs"],
        outputs=decoder["cache_outputs"],
        slot_axes=[decoder["slot_axis"][name.rsplit(".", 1)[1]] for name in decoder["cache_inputs"]],
        heads=decoder["cache_shape"]["heads"],
        head_dim=decoder["cache_shape"]["head_dim"],
    )
    return batch, lone


def _plain_logits(graph: OnnxGraph, names: list[str], prompt: list[int], tokens: list[int]) -> list[np.ndarray]:
    """One sequence alone, the cache grown by concatenation to exactly its length (no spare slots):
    the logits after the prompt and after each of `tokens`."""
    key_shape = graph.inputs[3].shape  # (B, H, D, S)
    heads, head_dim = key_shape[1], key_shape[2]
    cache = [
        np.zeros((1, heads, head_dim, 0) if n.endswith(".key") else (1, heads, 0, head_dim), np.float32) for n in names
    ]
    out, x, length = [], np.array([prompt], np.int64), 0
    for i in range(len(tokens) + 1):
        feeds = {"input_ids": x, "padding": np.zeros(1, np.int64), "length": np.array(length, np.int64)}
        result = graph.run({**feeds, **dict(zip(names, cache, strict=True))})
        out.append(result["logits"][0])
        new = [result[n.replace("past.", "new.")] for n in names]
        cache = [
            np.concatenate([c, v], axis=3 if n.endswith(".key") else 2)
            for n, c, v in zip(names, cache, new, strict=True)
        ]
        length += x.shape[1]
        x = np.array([tokens[i : i + 1]], np.int64)
    return out


def test_batched_decoding_with_left_padding_matches_decoding_alone(generator_repository: Path) -> None:
    """Continuous batching must not change any sequence's logits: pad, join, leave, trim."""
    make = lambda: _kv_batch(generator_repository)[0]  # noqa: E731
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 50, n)) for n in (9, 3, 5)]
    steps = [rng.integers(0, 50, 3) for _ in range(4)]

    alone = []
    for i, prompt in enumerate(prompts):
        batch = make()
        logits, rows = batch.prefill([prompt])
        batch.join(rows)
        out = [logits[0]]
        for tokens in steps:
            out.append(batch.step(tokens[i : i + 1])[0])
        alone.append(out)

    batch = make()
    logits0, rows = batch.prefill(prompts[:1])  # the long one first, alone
    np.testing.assert_allclose(logits0[0], alone[0][0], atol=1e-4)
    batch.join(rows)
    first = batch.step(steps[0][:1])
    logits12, rows = batch.prefill(prompts[1:])  # two shorter ones join (padded prefill)
    np.testing.assert_allclose(logits12, [alone[1][0], alone[2][0]], atol=1e-4)
    np.testing.assert_allclose(first[0], alone[0][1], atol=1e-4)
    batch.join(rows)
    # row 0 has had one step; rows 1 and 2 none: feed each its own next token
    both = batch.step(np.array([steps[1][0], steps[0][1], steps[0][2]]))
    np.testing.assert_allclose(both, [alone[0][2], alone[1][1], alone[2][1]], atol=1e-4)
    batch.keep([1, 2])  # the long sequence leaves: its padding columns are trimmed
    assert batch.padding.min() == 0
    rest = batch.step(np.array([steps[1][1], steps[1][2]]))
    np.testing.assert_allclose(rest, [alone[1][2], alone[2][2]], atol=1e-4)


def test_the_cache_buffers_grow_and_rearrange_without_changing_any_sequence(generator_repository: Path) -> None:
    """Over many steps (the buffers grow past several chunks of slots), sequences of different
    lengths join at different times, leave from the middle and the end, and the batch empties and
    refills: every sequence's logits match the same sequence decoded alone by a plain loop whose
    cache is concatenated to exactly its length."""
    batch, lone = _kv_batch(generator_repository)
    names = [i.name for i in lone.inputs if i.name.startswith("past.")]
    rng = np.random.default_rng(1)
    # name: (prompt length, step at which it joins, tokens it decodes)
    plan = {"a": (7, 0, 90), "b": (2, 10, 40), "c": (30, 10, 70), "d": (1, 45, 60), "e": (4, 130, 5)}
    prompts = {n: list(rng.integers(0, 50, p)) for n, (p, _, _) in plan.items()}
    tokens = {n: list(rng.integers(0, 50, k)) for n, (_, _, k) in plan.items()}
    expected = {n: _plain_logits(lone, names, prompts[n], tokens[n]) for n in plan}
    got: dict[str, list[np.ndarray]] = {n: [] for n in plan}
    rows: list[str] = []  # the batch's rows, in order
    for step in range(140):
        done = [i for i, n in enumerate(rows) if len(got[n]) == len(tokens[n]) + 1]
        if done:
            batch.keep([i for i in range(len(rows)) if i not in done])
            rows = [n for i, n in enumerate(rows) if i not in done]
        joining = [n for n, (_, at, _) in plan.items() if at == step]
        if joining:
            logits, new = batch.prefill([prompts[n] for n in joining])
            batch.join(new)
            rows += joining
            for n, row in zip(joining, logits, strict=True):
                got[n].append(row)
        if rows:
            fed = [n for n in rows if len(got[n]) <= len(tokens[n])]
            assert fed == rows
            logits = batch.step(np.array([tokens[n][len(got[n]) - 1] for n in rows]))
            for n, row in zip(rows, logits, strict=True):
                got[n].append(row)
        if step == 85:
            assert batch.cache[0].shape[3] >= 96  # grown over several chunks of slots
    assert rows == [] and batch.rows == 0 and batch.length == 0
    for n in plan:
        assert len(got[n]) == len(expected[n])
        np.testing.assert_allclose(np.array(got[n]), np.array(expected[n]), atol=2e-4, err_msg=n)


def test_batched_state_decoding_matches_decoding_alone(generator_repository: Path) -> None:
    graph, manifest = _step_graph(generator_repository, "generator-gru-shakespeare")
    shape = manifest["decoder"]["state_shape"]
    prompts = [[1, 2, 3, 4], [5, 6], [7, 8]]
    alone = []
    for prompt in prompts:
        batch = StateBatch(graph, layers=shape["layers"], hidden=shape["hidden"])
        logits, rows = batch.prefill([prompt])
        batch.join(rows)
        alone.append([logits[0], batch.step(np.array([9]))[0]])
    batch = StateBatch(graph, layers=shape["layers"], hidden=shape["hidden"])
    logits, rows = batch.prefill(prompts)
    batch.join(rows)
    np.testing.assert_allclose(logits, [a[0] for a in alone], atol=1e-5)
    batch.keep([2, 0])
    np.testing.assert_allclose(batch.step(np.array([9, 9])), [alone[2][1], alone[0][1]], atol=1e-5)
