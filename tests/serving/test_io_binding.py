"""IO binding on the CPU provider: the device path (OrtValues, IOBinding, array-operation graphs)
gives what the numpy path gives, for the array operations and for the decode loops' caches.

On a GPU the same code runs with OrtValues in CUDA memory (scripts/gpu_check.py compares the two
providers); here it runs in host memory, which is how CI covers it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from myelin_serving.devices import HOST, BoundTensors, HostTensors
from myelin_serving.generator.cache import KVCacheBatch, StateBatch
from myelin_serving.runtime import OnnxGraph, RuntimeOptions
from myelin_serving.settings import Settings, parse_device
from myelin_serving.translator.batch import ActiveBatch, Job
from myelin_serving.translator.model import OnnxStepGraphs
from myelin_serving.translator.search import BeamSearch, SearchOptions

BOUND = BoundTensors("cpu", 0, ["CPUExecutionProvider"])


def test_device_settings_accept_an_index_and_refuse_anything_else() -> None:
    assert parse_device("cuda:1") == ("cuda", 1)
    assert parse_device("cpu") == ("cpu", 0)
    assert Settings(device="cuda:0", io_binding="on", device_memory_limit_mb=512).device == "cuda:0"
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0", "cuda:-1"):
        with pytest.raises(ValidationError, match="auto, cpu, cuda or cuda:N"):
            Settings(device=bad)
    with pytest.raises(ValidationError):
        Settings(io_binding="sometimes")


def test_binding_follows_the_setting_and_auto_leaves_the_cpu_provider_unbound(generator_repository: Path) -> None:
    path = generator_repository / "generator-gru-shakespeare" / "1" / "step.onnx"
    assert OnnxGraph(path, RuntimeOptions("cpu", 1)).tensors is HOST
    bound = OnnxGraph(path, RuntimeOptions("cpu", 1, io_binding="on")).tensors
    assert isinstance(bound, BoundTensors) and bound.device == "cpu"
    assert OnnxGraph(path, RuntimeOptions("cpu", 1, io_binding="off")).tensors is HOST


def both(array: np.ndarray) -> tuple[np.ndarray, ort.OrtValue]:
    return HOST.upload(array), BOUND.upload(array)


def same(host: np.ndarray, bound: ort.OrtValue) -> None:
    got = BOUND.download(bound)
    assert got.shape == host.shape
    np.testing.assert_array_equal(got, host)


@pytest.mark.parametrize(
    ("shape", "axis", "start", "stop", "before", "after", "rows", "row_axis"),
    [
        ((3, 2, 4, 5), 3, 1, 4, 0, 2, None, 0),  # trim and grow the slot axis
        ((3, 2, 5, 4), 2, 0, 5, 3, 1, [2, 0], 0),  # rows taken, padded on both sides
        ((2, 3, 6), 0, 0, 2, 0, 4, None, 0),  # new zero rows
        ((2, 4, 3), 0, 0, 2, 0, 0, [3, 1, 1], 1),  # rows on axis 1 (a recurrent state), repeated
        ((3, 2, 4, 5), 3, 5, 5, 0, 2, None, 0),  # an empty slice, then room
        ((3, 2, 4, 5), 3, 0, 5, 0, 0, [], 0),  # no rows left
    ],
)
def test_window_matches_numpy(
    shape: tuple[int, ...],
    axis: int,
    start: int,
    stop: int,
    before: int,
    after: int,
    rows: list[int] | None,
    row_axis: int,
) -> None:
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    host, bound = both(array)
    index = None if rows is None else np.array(rows, dtype=np.int64)
    expected = array if index is None else np.take(array, index, axis=row_axis)
    expected = np.moveaxis(np.moveaxis(expected, axis, 0)[start:stop], 0, axis)
    widths = [(0, 0)] * len(shape)
    widths[axis] = (before, after)
    expected = np.pad(expected, widths)
    kwargs: dict[str, Any] = {"before": before, "after": after, "rows": index, "row_axis": row_axis}
    np.testing.assert_array_equal(HOST.window(host, axis, start, stop, **kwargs), expected)
    same(expected, BOUND.window(bound, axis, start, stop, **kwargs))


def test_concat_zeros_and_in_place_writes_match_numpy() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 2, 3)).astype(np.float32) for n in (2, 0, 3)]
    same(np.concatenate(parts), BOUND.concat([BOUND.upload(p) for p in parts], axis=0))
    same(np.zeros((4, 1, 2), np.float32), BOUND.concat([BOUND.zeros((2, 1, 2)), BOUND.zeros((2, 1, 2))], 0))
    same(np.zeros((2, 0, 3), np.float32), BOUND.zeros((2, 0, 3)))
    # keys (B, H, D, S) written at slot 2 of 4, values (B, H, S, D) at slots 2..3
    keys, values = np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.float32)
    new_keys = rng.standard_normal((2, 3, 4, 1)).astype(np.float32)
    new_values = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
    bound_keys, bound_values = BOUND.upload(keys), BOUND.upload(values)
    address = bound_keys.data_ptr()
    HostTensors().write([keys, values], [new_keys, new_values], [3, 2], 2)
    BOUND.write([bound_keys, bound_values], [BOUND.upload(new_keys), BOUND.upload(new_values)], [3, 2], 2)
    assert bound_keys.data_ptr() == address  # in place: the same buffer, now holding the new slot
    np.testing.assert_array_equal(keys[..., 2:3], new_keys)
    same(keys, bound_keys)
    same(values, bound_values)


def _kv(repository: Path, binding: str) -> KVCacheBatch:
    version = repository / "generator-gpt-shakespeare" / "1"
    decoder = json.loads((version / "model.json").read_text())["decoder"]
    return KVCacheBatch(
        OnnxGraph(version / "step.onnx", RuntimeOptions("cpu", 1, io_binding=binding)),
        inputs=decoder["cache_inputs"],
        outputs=decoder["cache_outputs"],
        slot_axes=[decoder["slot_axis"][name.rsplit(".", 1)[1]] for name in decoder["cache_inputs"]],
        heads=decoder["cache_shape"]["heads"],
        head_dim=decoder["cache_shape"]["head_dim"],
    )


def test_the_bound_kv_cache_decodes_exactly_as_the_host_one(generator_repository: Path) -> None:
    """Joins of different lengths, steps past several slot chunks, rows leaving from the middle,
    the batch emptying and refilling: the same logits every step, and the same cache contents."""
    host, bound = _kv(generator_repository, "off"), _kv(generator_repository, "on")
    assert bound.tensors is not HOST
    rng = np.random.default_rng(2)
    longest = 0
    for step in range(80):
        if step in (0, 5, 40, 61):
            prompts = [list(rng.integers(0, 50, int(n))) for n in rng.integers(1, 12, 2)]
            (logits_h, rows_h), (logits_b, rows_b) = host.prefill(prompts), bound.prefill(prompts)
            np.testing.assert_allclose(logits_b, logits_h, rtol=1e-5, atol=1e-5)
            host.join(rows_h)
            bound.join(rows_b)
        if step in (20, 55, 60):  # a middle row leaves; at 60 everything does
            keep = [] if step == 60 else [i for i in range(host.rows) if i != host.rows // 2]
            host.keep(keep)
            bound.keep(keep)
        if host.rows:
            tokens = rng.integers(0, 50, host.rows)
            np.testing.assert_allclose(bound.step(tokens), host.step(tokens), rtol=1e-5, atol=1e-5)
        assert (bound.rows, bound.length, list(bound.padding)) == (host.rows, host.length, list(host.padding))
        longest = max(longest, bound.length)
    assert longest > 64  # the buffers grew over several chunks of slots
    for h, b in zip(host.cache, bound.cache, strict=True):
        np.testing.assert_allclose(BOUND.download(b), h, rtol=1e-5, atol=1e-5)


def test_the_bound_recurrent_state_decodes_exactly_as_the_host_one(generator_repository: Path) -> None:
    version = generator_repository / "generator-gru-shakespeare" / "1"
    shape = json.loads((version / "model.json").read_text())["decoder"]["state_shape"]
    batches = [
        StateBatch(OnnxGraph(version / "step.onnx", RuntimeOptions("cpu", 1, io_binding=b)), **shape)
        for b in ("off", "on")
    ]
    outputs: list[list[np.ndarray]] = [[], []]
    prompts = [[1, 2, 3], [4], [5, 6, 7], [8, 9]]  # lengths 3, 1, 3, 2: three groups, out of order
    for batch, out in zip(batches, outputs, strict=True):
        logits, rows = batch.prefill(prompts)
        batch.join(rows)
        out.append(logits)
        out.append(batch.step(np.array([1, 2, 3, 4])))
        batch.keep([3, 0])
        out.append(batch.step(np.array([5, 6])))
    for h, b in zip(*outputs, strict=True):
        np.testing.assert_allclose(b, h, rtol=1e-5, atol=1e-5)


def test_the_bound_translator_batch_decodes_exactly_as_the_host_one(translator_repository: Path) -> None:
    """Encoder outputs and decoder caches kept as OrtValues, sentences joining, reordering beams,
    leaving: the same best hypotheses as with numpy arrays."""
    version = translator_repository / "translator-tatoeba" / "1"
    decoding = json.loads((version / "model.json").read_text())["decoding"]
    results = []
    for binding in ("off", "on"):
        options = RuntimeOptions("cpu", 1, io_binding=binding)
        encoder, decoder = (OnnxGraph(version / f"{n}.onnx", options) for n in ("encoder", "decoder"))
        graphs = OnnxStepGraphs(encoder, decoder, model="t", version=1, metrics=None)
        dims = (int(decoding[k]) for k in ("num_layers", "num_heads", "head_dim"))
        batch = ActiveBatch(*dims, bos_id=1, tensors=graphs.tensors)
        rng = np.random.default_rng(3)
        done: dict[int, Any] = {}
        for step in range(40):
            if step in (0, 3):
                sources = [np.array([*rng.integers(4, 60, int(n)), 2], np.int64) for n in rng.integers(2, 9, 3)]
                width = max(len(s) for s in sources)
                ids = np.zeros((len(sources), width), np.int64)
                for row, source in enumerate(sources):
                    ids[row, : len(source)] = source
                jobs = [
                    Job(s, BeamSearch(SearchOptions(4, 12, 0.6), eos_id=2, banned=(0, 1)), owner=step * 10 + i)
                    for i, s in enumerate(sources)
                ]
                batch.join(jobs, *graphs.encode(ids, ids != 0), ids != 0)
            if step == 5:
                batch.remove(lambda job: job.owner == 1)
            if len(batch):
                for job in batch.advance(*graphs.decode(batch.feeds())):
                    done[job.owner] = job.search.best()
        assert not len(batch) and len(done) == 5
        results.append(done)
    host, bound = results
    assert host.keys() == bound.keys()
    for owner in host:
        assert bound[owner].tokens == host[owner].tokens
        assert bound[owner].score == pytest.approx(host[owner].score, abs=1e-4)
