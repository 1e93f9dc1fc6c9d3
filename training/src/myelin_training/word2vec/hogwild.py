"""The word2vec epoch: worker processes sharing the model's tables without locks (Hogwild).

Chunks of about 100,000 tokens from the encoded corpus (stream.py) go to `threads` worker
processes; each turns its chunk into examples with numpy (pairs.py) and applies them in batches
with sparse SGD steps (model.py), as word2vec.c's and gensim's threads do. The learning rate falls
linearly with the words processed, from alpha to alpha * 1e-4, as in word2vec.c.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from myelin_training.word2vec import pairs, stream
from myelin_training.word2vec.model import Word2Vec
from myelin_training.word2vec.vocab import HuffmanTree, Vocabulary

CHUNK_TOKENS = 100_000
LOSS_EVERY = 8  # steps between loss readings (the loss costs a few percent of a step)
FORK = multiprocessing.get_context("fork")


class Progress:
    """Counters the workers share (in shared memory, so worker processes see one another's)."""

    FIELDS = ("done", "loss_sum", "loss_examples", "examples", "next_job")

    def __init__(self, total: int) -> None:
        self.total = total  # epochs * in-vocabulary words
        self._values = FORK.Array("d", len(self.FIELDS))  # zeros, with a lock

    def get(self, name: str) -> float:
        return float(self._values[self.FIELDS.index(name)])

    def add(self, **amounts: float) -> None:
        with self._values.get_lock():
            for name, amount in amounts.items():
                self._values[self.FIELDS.index(name)] += amount

    def take_job(self) -> int:
        with self._values.get_lock():
            job = int(self._values[self.FIELDS.index("next_job")])
            self._values[self.FIELDS.index("next_job")] = job + 1
            return job

    def reset(self, *names: str) -> None:
        with self._values.get_lock():
            for name in names:
                self._values[self.FIELDS.index(name)] = 0.0

    def fraction(self, extra: float = 0.0) -> float:
        return min((self.get("done") + extra) / (self.total + 1), 1.0)


class Trainer:
    """Runs epochs with `threads` worker processes sharing the model's tables (Hogwild).

    Processes, not threads: each SGD step is a few dozen short torch calls, and threads passing the
    GIL back and forth for each of them ran slower with two workers than with one. The tables live
    in shared memory (`share_memory_`), the workers are forked per epoch and pull chunks from a
    shared counter. One worker runs in this process.
    """

    def __init__(
        self,
        model: Word2Vec,
        vocab: Vocabulary,
        encoded: stream.EncodedCorpus,
        *,
        seed: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.config = model.config
        self.vocab = vocab
        self.encoded = encoded
        self.device = device
        self.seed = seed
        self.keep = vocab.keep_probabilities(self.config.sample)
        self.table = vocab.negative_table() if self.config.loss == "ns" else None
        self.tree = HuffmanTree.build(vocab.counts) if self.config.loss == "hs" else None
        self.progress = Progress(total=self.config.epochs * encoded.tokens)
        self.hot_inputs, self.hot_outputs = self._hot_rows()
        self.raw_per_token = vocab.corpus_words / max(vocab.train_words, 1)  # the bar counts corpus words

    def _hot_rows(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The rows whose per-batch count may exceed --row-cap, from the word statistics."""
        c = self.config
        kept = self.vocab.counts * self.keep  # occurrences surviving subsampling
        share = kept / kept.sum()
        # Skip-gram: one input (a context word) per example; CBOW: the window, 2 * mean(1..window) words.
        per_example = 1.0 if c.arch == "skipgram" else float(c.window + 1)
        inputs = c.batch_size * per_example * share
        hot_inputs = pairs.hot_slots(np.append(inputs, 0.0), c.row_cap)  # the padding row: never hot
        if self.tree is not None:
            # A Huffman node is in the path of every word below it: expected share = their share.
            on_path = np.arange(self.tree.points.shape[1])[None, :] < self.tree.lengths[:, None]
            nodes = np.bincount(
                self.tree.points[on_path],
                weights=np.broadcast_to(share[:, None], on_path.shape)[on_path],
                minlength=self.model.output.num_embeddings,
            )
            return hot_inputs, pairs.hot_slots(c.batch_size * nodes, c.row_cap)
        assert self.table is not None
        negatives = np.bincount(self.table, minlength=len(self.vocab)) / len(self.table)
        outputs = c.batch_size * (share + c.negative * negatives)
        return hot_inputs, pairs.hot_slots(outputs, c.row_cap)

    def lr(self, extra: float = 0.0) -> float:
        c = self.config
        return c.alpha * max(1.0 - self.progress.fraction(extra), c.min_alpha_ratio)

    def epoch(self, number: int, bar: tqdm) -> None:
        """One pass over the corpus: workers pull chunks until none is left."""
        ids, starts = self.encoded.load()
        jobs = stream.chunk_bounds(starts, self.encoded.tokens, CHUNK_TOKENS)
        self.progress.reset("next_job")
        workers = min(self.config.threads, len(jobs))
        shown = self.progress.get("done")

        def work(show: tqdm | None = None) -> None:
            while (index := self.progress.take_job()) < len(jobs):
                rng = np.random.default_rng([self.seed, number, index])
                begin, end = jobs[index]
                words = self._train_chunk(stream.read_chunk(ids, starts, begin, end), rng)
                if show is not None:
                    show.update(round(words * self.raw_per_token))
                    show.set_postfix(self.postfix(), refresh=False)

        if workers <= 1 or self.device.type != "cpu":
            work(bar)
            return
        for tensor in (self.model.input.weight, self.model.output.weight):
            tensor.data.share_memory_()
        processes = [FORK.Process(target=_run_worker, args=(work,), name=f"word2vec-{i}") for i in range(workers)]
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes):
            time.sleep(0.2)
            done = self.progress.get("done")
            bar.update(round((done - shown) * self.raw_per_token))
            bar.set_postfix(self.postfix(), refresh=False)
            shown = done
        bar.update(round((self.progress.get("done") - shown) * self.raw_per_token))
        failed = [p.name for p in processes if p.exitcode != 0]
        for process in processes:
            process.join()
        if failed:
            raise RuntimeError(f"word2vec worker(s) {', '.join(failed)} failed; see the errors above")

    def _train_chunk(self, chunk: stream.Chunk, rng: np.random.Generator) -> int:
        c = self.config
        kept = pairs.subsample(chunk.ids, self.keep, rng)
        ids, sentence = chunk.ids[kept], chunk.sentence[kept]
        if c.arch == "skipgram":
            examples = pairs.skipgram(ids, sentence, c.window, rng)
        else:
            examples = pairs.cbow(ids, sentence, c.window, self.model.pad, rng)
        words = len(chunk.ids)
        steps = max(1, -(-len(examples) // c.batch_size))
        # The predicted side for the whole chunk at once: negatives drawn in one go, or Huffman paths
        # padded to the tree's depth (each batch then keeps only its longest path's columns).
        if self.table is not None:
            outputs = pairs.negative_outputs(examples.targets, c.negative, self.table, rng)
            depth = np.zeros(len(examples), dtype=np.int64)
        else:
            assert self.tree is not None
            outputs = pairs.huffman_outputs(examples.targets, self.tree)
            depth = self.tree.lengths[examples.targets]
        input_scales = pairs.cap_scales(examples.inputs, c.batch_size, c.row_cap, self.hot_inputs, pad=self.model.pad)
        output_scales = pairs.cap_scales(outputs.rows, c.batch_size, c.row_cap, self.hot_outputs)
        # Whole-chunk tensors once; each step takes views of them (a few microseconds, not dozens).
        inputs, counts = self._tensor(examples.inputs), self._tensor(examples.counts)
        rows, labels, weights = (self._tensor(a) for a in (outputs.rows, outputs.labels, outputs.weights))
        in_scales = None if input_scales is None else self._tensor(input_scales)
        out_scales = None if output_scales is None else self._tensor(output_scales)
        loss_sum, loss_examples = 0.0, 0
        for step in range(steps):
            window = slice(step * c.batch_size, (step + 1) * c.batch_size)
            size = len(examples.targets[window])
            if size == 0:
                break
            # Negative sampling: every column; hierarchical softmax: up to the batch's longest path.
            k = int(depth[window].max()) if self.tree is not None else rows.shape[1]
            loss = self.model.sgd_step(
                inputs[window],
                counts[window],
                rows[window, :k],
                labels[window, :k],
                weights[window, :k],
                self.lr(words * step / steps),
                input_scale=None if in_scales is None else in_scales[window],
                output_scale=None if out_scales is None else out_scales[window, :k],
                with_loss=step % LOSS_EVERY == 0,
            )
            if loss is not None:
                loss_sum += float(loss)
                loss_examples += size
        self.progress.add(done=words, examples=len(examples), loss_sum=loss_sum, loss_examples=loss_examples)
        return words

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def postfix(self) -> dict[str, str]:
        loss = self.mean_loss()
        return {"lr": f"{self.lr():.5f}", "loss": "-" if loss != loss else f"{loss:.3f}"}  # nan: no reading yet

    def mean_loss(self) -> float:
        examples = self.progress.get("loss_examples")
        return self.progress.get("loss_sum") / examples if examples else float("nan")


def cpu_time() -> float:
    """CPU seconds of this process and its finished workers: a speed figure that other load on the
    machine distorts less than wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_worker(work: Callable[[], None]) -> None:
    """A forked worker: one torch thread, and no inherited cleanup (atexit, tqdm) when it ends."""
    torch.set_num_threads(1)
    code = 0
    try:
        work()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)
