"""myelin-train word2vec: learn word vectors from plain text and export them as word2vec-<name>.

    myelin-train word2vec --corpus PATH... --repository DIR [--arch skipgram|cbow] [--loss ns|hs]
    myelin-train word2vec --corpus-preset english --data-dir ../shared/data --repository DIR

The loop, per epoch: chunks of about 100,000 tokens from the encoded corpus (stream.py) go to
`--threads` worker processes; each turns its chunk into examples with numpy (pairs.py) and applies
them in batches of `--batch-size` with sparse SGD steps (model.py). Workers share the two tables
without locks, as word2vec.c's and gensim's threads do (Hogwild). The learning rate falls
linearly with the words processed, from alpha to alpha * 1e-4, as in word2vec.c.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from myelin_training import checkpoints
from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data import corpus
from myelin_training.device import resolve_device
from myelin_training.reporting import MetricsLog, figures, plot_curves
from myelin_training.word2vec import evaluate, pairs, stream
from myelin_training.word2vec.export import export_model
from myelin_training.word2vec.model import Word2Vec, Word2VecConfig
from myelin_training.word2vec.vocab import HuffmanTree, Vocabulary

CHUNK_TOKENS = 100_000
LOSS_EVERY = 8  # steps between loss readings (the loss costs a few percent of a step)
DRY_RUN_WORDS = 20_000
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="myelin-train word2vec", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, default_name="")
    parser.add_argument("--corpus", type=Path, nargs="+", help="text files or folders (.gz read too)")
    parser.add_argument("--corpus-format", choices=corpus.FORMATS, default="text", help="for --corpus paths")
    parser.add_argument(
        "--corpus-preset", choices=sorted(corpus.PRESETS), help="a named corpus under --data-dir (english: ~2M words)"
    )
    parser.add_argument("--arch", choices=["skipgram", "cbow"], default="skipgram")
    parser.add_argument("--loss", choices=["ns", "hs"], default="ns", help="negative sampling or hierarchical softmax")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3, help="subsampling threshold t (0: off)")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="passes over the corpus (default 5; 1 with --dry-run)")
    parser.add_argument(
        "--alpha", type=float, default=0.0, help="starting learning rate (0: 0.025 skip-gram, 0.05 CBOW)"
    )
    parser.add_argument("--batch-size", type=int, default=Word2VecConfig.batch_size, help="examples per update")
    parser.add_argument(
        "--row-cap", type=int, default=Word2VecConfig.row_cap, help="per-batch update cap per row (0: none)"
    )
    parser.add_argument("--threads", type=int, default=2, help="worker processes, one core each (as gensim's workers)")
    parser.add_argument("--max-vocab", type=int, default=0, help="keep at most this many words (0: all)")
    parser.add_argument("--no-eval", action="store_true", help="skip the analogy and similarity evaluation")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue from <run-dir>/{checkpoints.CHECKPOINT} (written after every epoch) with its settings; "
        "--epochs sets a new total (the learning-rate decay stretched to it); a finished run only exports again",
    )
    args = parser.parse_args(argv)
    if not args.corpus and not args.corpus_preset:
        parser.error("give --corpus PATH... or --corpus-preset NAME")
    require_paths(parser, args, "repository")
    if args.corpus_preset or not args.no_eval:
        require_paths(parser, args, "data_dir")
    for flag in ("dim", "window", "epochs", "batch_size", "threads", "min_count"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.loss == "ns" and args.negative < 1:
        parser.error("--negative must be at least 1 with --loss ns")
    if not args.name:
        args.name = f"word2vec-{args.arch}" + ("-hs" if args.loss == "hs" else "")
    if not args.name.startswith("word2vec-"):
        args.name = f"word2vec-{args.name}"
    dry_run_name(args)
    return args


def corpus_files(args: argparse.Namespace) -> list[corpus.CorpusFile]:
    files = corpus.preset(args.corpus_preset, args.data_dir) if args.corpus_preset else []
    return files + (corpus.resolve(args.corpus, args.corpus_format) if args.corpus else [])


def limited(sentences: Iterator[list[str]], words: int) -> Iterator[list[str]]:
    seen = 0
    for sentence in sentences:
        if seen >= words:
            return
        yield sentence
        seen += len(sentence)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the workers are the parallelism: one core each, as gensim's workers
    run_dir = args.run_dir or Path("runs") / args.name
    files = corpus_files(args)
    eval_paths = None if args.no_eval else evaluate.eval_paths(args.data_dir)

    def text() -> Iterator[list[str]]:
        sentences = corpus.sentences(files)
        return limited(sentences, DRY_RUN_WORDS) if args.dry_run else sentences

    checkpoint_path = run_dir / checkpoints.CHECKPOINT
    resume = checkpoints.load(checkpoint_path) if args.resume else None
    # --epochs, else the checkpoint's when resuming, else 5 (1 for a dry run)
    epochs = args.epochs or (resume["config"]["epochs"] if resume else 1 if args.dry_run else 5)
    started = time.perf_counter()
    min_count = 1 if args.dry_run else args.min_count
    vocab = Vocabulary.build(
        tqdm(text(), desc="vocabulary", unit=" sentences", disable=None), min_count, args.max_vocab
    )
    encoded = stream.encode(text(), vocab, run_dir)
    prepare = time.perf_counter() - started
    print(
        f"{args.name}: {vocab.corpus_words:,} words in {vocab.sentences:,} sentences; vocabulary {len(vocab):,} "
        f"words (min count {min_count}), {vocab.train_words:,} training words per epoch ({prepare:.1f} s)"
    )
    config = Word2VecConfig(
        vocab_size=len(vocab),
        dim=args.dim,
        arch=args.arch,
        loss=args.loss,
        window=args.window,
        negative=args.negative,
        sample=args.sample,
        min_count=min_count,
        epochs=epochs,
        alpha=args.alpha,
        batch_size=args.batch_size,
        row_cap=args.row_cap,
        threads=args.threads,
    )
    if resume is not None:
        config = Word2VecConfig(**{**resume["config"], "epochs": epochs})
        if resume["words"] != vocab.words:
            raise SystemExit(
                f"--resume: the corpus is not the one {checkpoint_path} was trained on (its vocabulary differs)"
            )
    model = Word2Vec(config, generator=torch.Generator().manual_seed(args.seed)).to(device)
    trainer = Trainer(model, vocab, encoded, seed=args.seed, device=device)
    log = MetricsLog(run_dir / "metrics.jsonl", append=resume is not None)
    train_seconds = cpu_seconds = 0.0
    start_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        trainer.progress.add(done=resume["done"], examples=resume["examples"])
        train_seconds, cpu_seconds, start_epoch = resume["train_seconds"], resume["cpu_seconds"], resume["epoch"] + 1
        log.keep_until("epoch", resume["epoch"])
        print(f"resumed from {checkpoint_path} after epoch {resume['epoch']} of {config.epochs}")
    report: dict[str, Any] = {}
    bar = tqdm(
        total=config.epochs * vocab.corpus_words,
        desc=args.name,
        unit=" words",
        unit_scale=True,
        smoothing=0.1,
        disable=None,  # a terminal only: no carriage returns in logs
    )
    bar.update(round(trainer.progress.get("done") * trainer.raw_per_token))
    for epoch in range(start_epoch, config.epochs + 1):
        tick, cpu_tick = time.perf_counter(), cpu_time()
        trainer.epoch(epoch, bar)
        train_seconds += time.perf_counter() - tick
        cpu_seconds += cpu_time() - cpu_tick
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": trainer.mean_loss(),
            "lr": trainer.lr(),
            "words_per_second": epoch * vocab.corpus_words / train_seconds,
            "train_seconds": round(train_seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
        }
        trainer.progress.reset("loss_sum", "loss_examples")
        if eval_paths is not None:
            scorer = evaluate.NumpyScorer(model.input.weight[:-1].detach().cpu().numpy())
            report = evaluate.evaluate_all(eval_paths, vocab.words, scorer)
            record.update(evaluate.headline(report))
        log.write(record)
        checkpoints.save(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "config": dataclasses.asdict(config),
                "words": vocab.words,
                "epoch": epoch,
                "done": trainer.progress.get("done"),
                "examples": trainer.progress.get("examples"),
                "train_seconds": train_seconds,
                "cpu_seconds": cpu_seconds,
            },
        )
        tqdm.write(f"epoch {epoch}: {figures(record, skip=('lr',))}")
    bar.close()
    words_per_second = config.epochs * vocab.corpus_words / train_seconds
    print(
        f"{args.name}: trained in {train_seconds:.1f} s, {words_per_second:,.0f} corpus words/s "
        f"({cpu_seconds:.1f} CPU seconds)"
    )
    plot = plot_curves(
        log.records,
        run_dir / "curves.png",
        x="epoch",
        panels={"loss": ["loss"], "evaluation": ["analogy_accuracy", "wordsim353_spearman", "simlex999_spearman"]},
        title=f"{args.name}: {config.arch}, {config.loss}, dim {config.dim}",
    )
    version_dir = export_model(
        model.cpu(),
        vocab,
        config,
        args=args,
        files=files,
        eval_paths=eval_paths,
        training={
            "seed": args.seed,
            "device": str(device),
            "dry_run": bool(args.dry_run),
            "train_seconds": round(train_seconds, 2),
            "words_per_second": round(words_per_second),
            "cpu_seconds": round(cpu_seconds, 2),
            "corpus_words": vocab.corpus_words,
            "train_words": vocab.train_words,
            "sentences": vocab.sentences,
            "examples": int(trainer.progress.get("examples")),
            "tokenizer": "lowercase; words are maximal runs of Unicode letters and digits; a line is a sentence",
        },
        side_files=[log.path, plot],
    )
    for leftover in (encoded.ids_path, encoded.starts_path):
        leftover.unlink(missing_ok=True)
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def model_config_dict(config: Word2VecConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


if __name__ == "__main__":
    main()
