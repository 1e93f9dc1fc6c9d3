"""The generator's domain logic without gRPC: sampling, stop sequences, streaming text, batched caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from myelin_serving.errors import InvalidArgument
from myelin_serving.generator.cache import KVCacheBatch, StateBatch
from myelin_serving.generator.sampling import Sampler, SamplingParams
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
    ids = codec.encode_prompt(text)
    assert len(ids) > len(text)  # multi-byte characters take several byte tokens
    decoder = IncrementalDecoder(codec)
    pieces = [decoder.add(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == text
    assert all("\ufffd" not in p for p in pieces)


def _step_graph(repository: Path, name: str) -> tuple[OnnxGraph, dict]:
    manifest = json.loads((repository / name / "1" / "model.json").read_text())
    return OnnxGraph(repository / name / "1" / "step.onnx", RuntimeOptions("cpu", 1)), manifest


def test_batched_decoding_with_left_padding_matches_decoding_alone(generator_repository: Path) -> None:
    """Continuous batching must not change any sequence's logits: pad, join, leave, trim; and one-row
    steps on the one-thread session agree with batches on the two-thread one."""
    lone, manifest = _step_graph(generator_repository, "generator-gpt-shakespeare")
    graph = OnnxGraph(lone.path, RuntimeOptions("cpu", 2))
    decoder = manifest["decoder"]
    shape = decoder["cache_shape"]

    def make() -> KVCacheBatch:
        return KVCacheBatch(
            graph,
            inputs=decoder["cache_inputs"],
            outputs=decoder["cache_outputs"],
            heads=shape["heads"],
            head_dim=shape["head_dim"],
            lone_graph=lone,
        )

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
