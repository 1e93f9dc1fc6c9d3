"""word2vec training pieces: corpus streaming, vocabulary statistics, examples, the SGD step, export, evaluation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from myelin_training.cli import train_main
from myelin_training.data import corpus
from myelin_training.data.files import DatasetNotFoundError
from myelin_training.word2vec import evaluate, pairs, stream
from myelin_training.word2vec.model import Word2Vec, Word2VecConfig
from myelin_training.word2vec.vocab import HuffmanTree, Vocabulary


def test_tokeniser_lowercases_and_splits_on_non_letters() -> None:
    assert corpus.tokenize("The King's <unk> 1,000 lobsters @-@ Zürich!") == [
        "the", "king", "s", "unk", "1", "000", "lobsters", "zürich",
    ]  # fmt: skip


def test_corpus_reads_files_folders_gzip_and_the_first_column(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("One two\n\nthree\n")
    with gzip.open(folder / "b.gz", "wt") as f:
        f.write("Four five\n")
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("Go now.\tVa maintenant.\nStop!\tArrête !\n")
    files = corpus.resolve([folder]) + corpus.resolve([pairs_file], "tsv-first")
    assert list(corpus.sentences(files)) == [["one", "two"], ["three"], ["four", "five"], ["go", "now"], ["stop"]]


def test_one_huge_line_streams_in_pieces_with_the_same_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [f"w{i % 37}" for i in range(25_000)]
    path = tmp_path / "text8-like"
    path.write_text(" ".join(words))  # no newline at all, like text8
    whole = list(corpus.sentences([corpus.CorpusFile(path)]))
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 1000)  # read it 1,000 characters at a time
    pieces = list(corpus.sentences([corpus.CorpusFile(path)]))
    assert pieces == whole
    assert [len(s) for s in whole] == [corpus.MAX_SENTENCE, corpus.MAX_SENTENCE, 5_000]
    assert [w for s in whole for w in s] == words


def test_missing_corpus_names_every_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        corpus.resolve([tmp_path / "nope.txt", tmp_path / "also-nope"])
    assert "nope.txt" in str(info.value) and "also-nope" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="wikitext-2"):
        corpus.preset("english", tmp_path)


def test_vocabulary_statistics_follow_word2vec() -> None:
    sentences = [["a"] * 50 + ["b"] * 20 + ["c"] * 5 + ["d"] * 2 + ["e"]]
    vocab = Vocabulary.build(sentences, min_count=2)
    assert vocab.words == ["a", "b", "c", "d"] and vocab.corpus_words == 78 and vocab.train_words == 77
    keep = vocab.keep_probabilities(0.01)
    threshold = 0.01 * 77
    assert keep[0] == pytest.approx((np.sqrt(50 / threshold) + 1) * threshold / 50, rel=1e-6)
    assert keep[3] == 1.0 and keep[0] < keep[1] < keep[2]
    assert vocab.negative_table().dtype == np.int16  # few words: the small type
    table = vocab.negative_table(100_000)
    share = np.bincount(table, minlength=4) / len(table)
    expected = vocab.counts**0.75 / (vocab.counts**0.75).sum()
    np.testing.assert_allclose(share, expected, atol=1e-4)
    assert vocab.encode(["a", "zzz", "d"]).tolist() == [0, 3]


def test_huffman_codes_are_prefix_free_and_frequent_words_get_short_codes() -> None:
    counts = np.array([100, 60, 30, 10, 5, 5, 1])
    tree = HuffmanTree.build(counts)
    codes = ["".join(str(int(b)) for b in tree.codes[w, : tree.lengths[w]]) for w in range(len(counts))]
    assert all(not b.startswith(a) for a in codes for b in codes if a != b)
    assert list(tree.lengths) == sorted(tree.lengths)
    assert all(tree.points[w, 0] == len(counts) - 2 for w in range(len(counts)))  # the root first
    assert (tree.points[tree.codes.astype(bool) | True] < len(counts) - 1).all()


def test_skipgram_pairs_stay_in_window_and_sentence_and_prefer_near_words() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    ids = np.arange(n, dtype=np.int32)
    sentence = np.repeat(np.arange(n // 50), 50)
    examples = pairs.skipgram(ids, sentence, 5, rng)
    target, context = examples.targets, examples.inputs[:, 0]
    distance = np.abs(target - context)
    assert distance.min() == 1 and distance.max() == 5
    assert (sentence[target] == sentence[context]).all()
    histogram = np.bincount(distance, minlength=6)[1:]
    assert (np.diff(histogram) < 0).all()  # nearer words are used more often
    # b uniform in 1..5: distance d is used with probability (6 - d) / 5 per side, where the
    # 50-word sentence has a word at that distance
    d = np.arange(1, 6)
    expected = (6 - d) / 5 * 2 * n * (50 - d) / 50
    np.testing.assert_allclose(histogram, expected, rtol=0.05)


def test_cbow_contexts_are_padded_windows() -> None:
    rng = np.random.default_rng(1)
    ids = np.array([3, 4, 5, 6, 7, 8], dtype=np.int32)
    sentence = np.array([0, 0, 0, 1, 1, 1])
    examples = pairs.cbow(ids, sentence, 2, pad=99, rng=rng, shuffle=False)
    for inputs, count, target in zip(examples.inputs, examples.counts, examples.targets, strict=True):
        real = inputs[inputs != 99]
        assert len(real) == count and target not in real
        assert {int(target) < 6} == {int(w) < 6 for w in real}  # never across the sentence boundary
        assert np.abs(real - target).max() <= 2


def test_negatives_skip_the_target_and_hs_paths_are_masked() -> None:
    rng = np.random.default_rng(2)
    targets = np.zeros(1000, dtype=np.int64)
    out = pairs.negative_outputs(targets, 5, np.array([0, 0, 1, 2], dtype=np.int32), rng)
    assert out.rows.shape == (1000, 6) and (out.labels[:, 0] == 1).all() and (out.labels[:, 1:] == 0).all()
    assert ((out.rows[:, 1:] == 0) == (out.weights[:, 1:] == 0)).all()
    tree = HuffmanTree.build(np.array([10, 5, 3, 1]))
    hs = pairs.huffman_outputs(np.array([0, 3]), tree)
    assert hs.weights.sum(axis=1).tolist() == tree.lengths[[0, 3]].tolist()


@pytest.mark.parametrize(("arch", "loss"), [("skipgram", "ns"), ("cbow", "ns"), ("skipgram", "hs")])
def test_sgd_step_is_the_gradient_of_the_loss(arch: str, loss: str) -> None:
    torch.manual_seed(0)
    config = Word2VecConfig(vocab_size=30, dim=8, arch=arch, loss=loss)
    model = Word2Vec(config, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(model.output.weight, std=0.3)
    b = 6
    if arch == "skipgram":
        inputs, counts = torch.randint(0, 30, (b, 1)), torch.ones(b)
    else:
        inputs = torch.randint(0, 30, (b, 4))
        inputs[:, 3] = model.pad
        counts = torch.full((b,), 3.0)
    rows = torch.randint(0, model.output.num_embeddings, (b, 4))
    labels = torch.tensor([[1.0, 0, 0, 0]]).repeat(b, 1)
    weights = torch.ones(b, 4)
    w_in, w_out = model.input.weight.detach().clone(), model.output.weight.detach().clone()
    reference = Word2Vec(config)
    reference.load_state_dict(model.state_dict())
    reference.loss(inputs, counts, rows, labels, weights).backward()
    lr = 0.1
    model.sgd_step(inputs, counts, rows, labels, weights, lr)
    grad_in = reference.input.weight.grad.to_dense()
    grad_out = reference.output.weight.grad.to_dense()
    if arch == "cbow":
        grad_in = grad_in * 3  # word2vec.c gives each context word the whole gradient of the mean
        grad_in[model.pad] = 0
    torch.testing.assert_close(model.input.weight.detach(), w_in - lr * grad_in, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.output.weight.detach(), w_out - lr * grad_out, atol=1e-6, rtol=1e-5)


def test_row_cap_scales_a_frequent_rows_updates_per_batch() -> None:
    rows = np.array([[5, 1], [5, 2], [5, 3], [5, 4], [6, 1], [5, 5]])
    slots = pairs.hot_slots(np.array([0, 0, 0, 0, 0, 9.0, 9.0, 0, 0, 0]), cap=2)  # rows 5 and 6 are frequent
    for counted in (None, slots):  # every row counted, or only the hot ones
        scales = pairs.cap_scales(rows, batch_size=4, cap=2, slots=counted)
        assert scales is not None
        # Batch 1 (examples 0-3): row 5 occurs 4 times, so each occurrence counts 2/4; the rest count 1.
        assert scales[:4, 0].tolist() == [0.5] * 4 and (scales[:4, 1] == 1).all()
        assert (scales[4:] == 1).all()  # batch 2: nothing above the cap
    assert pairs.cap_scales(rows, batch_size=4, cap=4) is None
    padded = np.array([[9, 9, 1], [9, 9, 2]])
    assert pairs.cap_scales(padded, batch_size=2, cap=1, pad=9) is None  # padding is not a row


def test_capped_step_moves_a_row_as_far_as_cap_identical_updates() -> None:
    config = Word2VecConfig(vocab_size=10, dim=4)
    model = Word2Vec(config, generator=torch.Generator().manual_seed(0))
    model.output.weight.data.fill_(0.5)
    inputs = torch.tensor([[1], [1], [1], [1], [2]])
    model.input.weight.data[2] = model.input.weight.data[1]  # the same gradient for every example
    before = model.input.weight.detach().clone()
    scale = pairs.cap_scales(inputs.numpy(), batch_size=5, cap=2)
    assert scale is not None
    rows = torch.tensor([[5], [5], [5], [5], [6]])
    model.sgd_step(
        inputs, torch.ones(5), rows, torch.ones(5, 1), torch.ones(5, 1), 0.1, input_scale=torch.from_numpy(scale)
    )
    moved = (model.input.weight.detach() - before).norm(dim=1)
    assert moved[1] == pytest.approx(2 * moved[2].item(), rel=1e-4)  # 4 updates capped to 2; row 2 had 1


def test_encoded_chunks_cut_at_sentence_starts(tmp_path: Path) -> None:
    sentences = [["a", "b", "c"], ["d", "zzz"], ["e", "f", "g", "h"]]
    vocab = Vocabulary.build(sentences, min_count=1)
    encoded = stream.encode(sentences, vocab, tmp_path)
    chunks = list(stream.chunks(encoded, size=4))
    assert [c.start for c in chunks] == [0, 5]
    assert chunks[0].sentence.tolist() == [0, 0, 0, 1, 1] and chunks[1].sentence.tolist() == [2, 2, 2, 2]
    assert np.concatenate([c.ids for c in chunks]).tolist() == list(range(9))


def test_spearman_matches_known_values_with_ties() -> None:
    assert evaluate.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert evaluate.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5]: Pearson's r of the ranks is 7.25 / 9.5.
    assert evaluate.spearman([1, 2, 2, 3, 5], [2, 1, 3, 3, 4]) == pytest.approx(7.25 / 9.5)


def test_numpy_scorer_answers_a_planted_analogy() -> None:
    vectors = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1], [0.2, 0.3, 0.1]], dtype=np.float32)
    words = ["man", "woman", "king", "queen", "noise"]
    section = evaluate.AnalogySection("family", [("man", "king", "woman", "queen"), ("man", "king", "gnu", "x")])
    report = evaluate.analogies([section], words, evaluate.NumpyScorer(vectors))
    assert report["total"] == {"accuracy": 1.0, "correct": 1, "answered": 1, "skipped": 1}
    assert report["semantic"]["answered"] == 1 and report["syntactic"]["answered"] == 0


def test_training_exports_a_complete_version(word2vec_repository: Path) -> None:
    version = word2vec_repository / "word2vec-skipgram" / "1"
    manifest = json.loads((version / "model.json").read_text())
    assert manifest["family"] == "embedder" and manifest["architecture"] == "skipgram"
    assert set(manifest["graphs"]) == {"lookup", "neighbours"}
    assert manifest["graphs"]["lookup"]["parity"]["max_abs_diff"] == 0.0
    assert manifest["training"]["model_config"]["window"] == 5 and manifest["dataset"]["sha256"]
    assert len(manifest["dataset"]["files"]) == len(corpus.PRESETS["english"])
    assert {"analogy_accuracy", "wordsim353_spearman", "simlex999_spearman"} <= set(manifest["evaluation"])
    assert manifest["evaluation_details"]["analogy"]["restrict_vocab"] == manifest["embedding"]["vocab_size"]
    vocab_lines = (version / "vocab.tsv").read_text().splitlines()
    header, *rows = (version / "vectors.txt").read_text().splitlines()
    assert header == f"{len(vocab_lines)} 100" and len(rows) == len(vocab_lines)
    assert [r.split(" ")[0] for r in rows] == [v.split("\t")[0] for v in vocab_lines]
    counts = [int(v.split("\t")[1]) for v in vocab_lines]
    assert counts == sorted(counts, reverse=True)
    for name in ("metrics.jsonl", "curves.png"):
        assert (version / name).is_file()
    cbow = json.loads((word2vec_repository / "word2vec-cbow-hs" / "1" / "model.json").read_text())
    assert cbow["training"]["model_config"]["loss"] == "hs" and cbow["architecture"] == "cbow"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repository", "r"], "give --corpus PATH"),
        (["--corpus", "x", "--repository", "r", "--no-eval", "--window", "0"], "--window must be at least 1"),
        (["--corpus", "x", "--repository", "r", "--no-eval", "--arch", "glove"], "invalid choice"),
    ],
)
def test_bad_flags_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["word2vec", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_missing_corpus_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="corpus file"):
        train_main(["word2vec", "--corpus", str(tmp_path / "missing.txt"), "--repository", str(tmp_path), "--no-eval"])
