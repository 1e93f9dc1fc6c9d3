"""myelin-train word2vec: learn word vectors from plain text and export them as word2vec-<name>.

    myelin-train word2vec --corpus PATH... --repository DIR [--arch skipgram|cbow] [--loss ns|hs]
    myelin-train word2vec --corpus-preset english --data-dir ../shared/data --repository DIR

Build, loop, export: the vocabulary and the encoded corpus (stream.py), then the epochs, each run
by worker processes sharing the model's tables (hogwild.py: sparse SGD steps as word2vec.c's and
gensim's threads take them), then the vectors, their evaluation and manifest (export.py). The
settings come from the recipes in config.py and the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from myelin_training import checkpoints
from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data import corpus
from myelin_training.device import resolve_device
from myelin_training.reporting import MetricsLog, figures, plot_curves
from myelin_training.word2vec import evaluate, stream
from myelin_training.word2vec.config import RECIPES, Recipe
from myelin_training.word2vec.export import export_model
from myelin_training.word2vec.hogwild import Trainer, cpu_time
from myelin_training.word2vec.model import Word2Vec, Word2VecConfig
from myelin_training.word2vec.vocab import Vocabulary

DEFAULT = RECIPES["default"].model  # the flags' defaults


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
    parser.add_argument("--dim", type=int, default=DEFAULT.dim)
    parser.add_argument("--window", type=int, default=DEFAULT.window)
    parser.add_argument("--negative", type=int, default=DEFAULT.negative)
    parser.add_argument("--sample", type=float, default=DEFAULT.sample, help="subsampling threshold t (0: off)")
    parser.add_argument("--min-count", type=int, default=DEFAULT.min_count)
    parser.add_argument("--epochs", type=int, help="passes over the corpus (default 5; 1 with --dry-run)")
    parser.add_argument(
        "--alpha", type=float, default=0.0, help="starting learning rate (0: 0.025 skip-gram, 0.05 CBOW)"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT.batch_size, help="examples per update")
    parser.add_argument("--row-cap", type=int, default=DEFAULT.row_cap, help="per-batch update cap per row (0: none)")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT.threads, help="worker processes, one core each (as gensim's workers)"
    )
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


@dataclass
class Job:
    """What a run trains on and with: the corpus encoded, its vocabulary and the config."""

    args: argparse.Namespace
    device: torch.device
    run_dir: Path
    files: list[corpus.CorpusFile]
    eval_paths: Any  # evaluate.eval_paths(...), None with --no-eval
    vocab: Vocabulary
    encoded: stream.EncodedCorpus
    config: Word2VecConfig
    resume: dict[str, Any] | None  # the checkpoint to go on from

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoints.CHECKPOINT


def prepare(args: argparse.Namespace) -> Job:
    """The vocabulary and the encoded corpus (one pass each), and the config from the flags and the recipe
    (or the checkpoint's when resuming)."""
    recipe: Recipe = RECIPES["dry-run" if args.dry_run else "default"]
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the workers are the parallelism: one core each, as gensim's workers
    run_dir = args.run_dir or Path("runs") / args.name
    files = corpus_files(args)
    eval_paths = None if args.no_eval else evaluate.eval_paths(args.data_dir)

    def text() -> Iterator[list[str]]:
        sentences = corpus.sentences(files)
        return limited(sentences, recipe.words) if recipe.words else sentences

    checkpoint_path = run_dir / checkpoints.CHECKPOINT
    resume = checkpoints.load(checkpoint_path) if args.resume else None
    # --epochs, else the checkpoint's when resuming, else the recipe's
    epochs = args.epochs or (resume["config"]["epochs"] if resume else recipe.model.epochs)
    started = time.perf_counter()
    min_count = recipe.model.min_count if args.dry_run else args.min_count
    vocab = Vocabulary.build(
        tqdm(text(), desc="vocabulary", unit=" sentences", disable=None), min_count, args.max_vocab
    )
    encoded = stream.encode(text(), vocab, run_dir)
    prepare_seconds = time.perf_counter() - started
    print(
        f"{args.name}: {vocab.corpus_words:,} words in {vocab.sentences:,} sentences; vocabulary {len(vocab):,} "
        f"words (min count {min_count}), {vocab.train_words:,} training words per epoch ({prepare_seconds:.1f} s)"
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
    return Job(args, device, run_dir, files, eval_paths, vocab, encoded, config, resume)


class Loop:
    """The epochs' state in one place: model, Trainer (the workers), metrics log, the seconds spent,
    the last evaluation. `run()` trains the epochs left, checkpointing after each."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.model = Word2Vec(job.config, generator=torch.Generator().manual_seed(job.args.seed)).to(job.device)
        self.trainer = Trainer(self.model, job.vocab, job.encoded, seed=job.args.seed, device=job.device)
        self.log = MetricsLog(job.run_dir / "metrics.jsonl", append=job.resume is not None)
        self.train_seconds = self.cpu_seconds = 0.0
        self.start_epoch = 1
        if job.resume is not None:
            resume = job.resume
            self.model.load_state_dict(resume["model"])
            self.trainer.progress.add(done=resume["done"], examples=resume["examples"])
            self.train_seconds, self.cpu_seconds = resume["train_seconds"], resume["cpu_seconds"]
            self.start_epoch = resume["epoch"] + 1
            self.log.keep_until("epoch", resume["epoch"])
            print(f"resumed from {job.checkpoint_path} after epoch {resume['epoch']} of {job.config.epochs}")

    def run(self) -> None:
        job, trainer = self.job, self.trainer
        bar = tqdm(
            total=job.config.epochs * job.vocab.corpus_words,
            desc=job.args.name,
            unit=" words",
            unit_scale=True,
            smoothing=0.1,
            disable=None,  # a terminal only: no carriage returns in logs
        )
        bar.update(round(trainer.progress.get("done") * trainer.raw_per_token))
        for epoch in range(self.start_epoch, job.config.epochs + 1):
            tick, cpu_tick = time.perf_counter(), cpu_time()
            trainer.epoch(epoch, bar)
            self.train_seconds += time.perf_counter() - tick
            self.cpu_seconds += cpu_time() - cpu_tick
            record = self.record(epoch)
            self.log.write(record)
            self.save(epoch)
            tqdm.write(f"epoch {epoch}: {figures(record, skip=('lr',))}")
        bar.close()

    def record(self, epoch: int) -> dict[str, Any]:
        """The epoch's figures: loss, rate, speed and (unless --no-eval) the evaluation's headline."""
        job, trainer = self.job, self.trainer
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": trainer.mean_loss(),
            "lr": trainer.lr(),
            "words_per_second": epoch * job.vocab.corpus_words / self.train_seconds,
            "train_seconds": round(self.train_seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
        }
        trainer.progress.reset("loss_sum", "loss_examples")
        if job.eval_paths is not None:
            scorer = evaluate.NumpyScorer(self.model.input.weight[:-1].detach().cpu().numpy())
            record.update(evaluate.headline(evaluate.evaluate_all(job.eval_paths, job.vocab.words, scorer)))
        return record

    def save(self, epoch: int) -> None:
        checkpoints.save(
            self.job.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "config": dataclasses.asdict(self.job.config),
                "words": self.job.vocab.words,
                "epoch": epoch,
                "done": self.trainer.progress.get("done"),
                "examples": self.trainer.progress.get("examples"),
                "train_seconds": self.train_seconds,
                "cpu_seconds": self.cpu_seconds,
            },
        )


def export(job: Job, loop: Loop) -> Path:
    """The vectors, their curves and their evaluation into the repository; the encoded corpus removed."""
    args, config, vocab = job.args, job.config, job.vocab
    words_per_second = config.epochs * vocab.corpus_words / loop.train_seconds
    print(
        f"{args.name}: trained in {loop.train_seconds:.1f} s, {words_per_second:,.0f} corpus words/s "
        f"({loop.cpu_seconds:.1f} CPU seconds)"
    )
    plot = plot_curves(
        loop.log.records,
        job.run_dir / "curves.png",
        x="epoch",
        panels={"loss": ["loss"], "evaluation": ["analogy_accuracy", "wordsim353_spearman", "simlex999_spearman"]},
        title=f"{args.name}: {config.arch}, {config.loss}, dim {config.dim}",
    )
    version_dir = export_model(
        loop.model.cpu(),
        vocab,
        config,
        args=args,
        files=job.files,
        eval_paths=job.eval_paths,
        training={
            "seed": args.seed,
            "device": str(job.device),
            "dry_run": bool(args.dry_run),
            "train_seconds": round(loop.train_seconds, 2),
            "words_per_second": round(words_per_second),
            "cpu_seconds": round(loop.cpu_seconds, 2),
            "corpus_words": vocab.corpus_words,
            "train_words": vocab.train_words,
            "sentences": vocab.sentences,
            "examples": int(loop.trainer.progress.get("examples")),
            "tokenizer": "lowercase; words are maximal runs of Unicode letters and digits; a line is a sentence",
        },
        side_files=[loop.log.path, plot],
    )
    for leftover in (job.encoded.ids_path, job.encoded.starts_path):
        leftover.unlink(missing_ok=True)
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def main(argv: list[str] | None = None) -> Path:
    job = prepare(parse_args(argv))
    loop = Loop(job)
    loop.run()
    return export(job, loop)


def model_config_dict(config: Word2VecConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


if __name__ == "__main__":
    main()
