"""myelin-train translator: train the English-to-French Transformer and export it as translator-<corpus>.

    myelin-train translator --data-dir ../shared/data --repository model_repository [--corpus tatoeba]
        [--config cpu|gpu|quick] [--epochs N] [--resume [CHECKPOINT]] [--device auto|cpu|cuda] [--dry-run]

Length-bucketed token batches, label smoothing, Adam with warm-up then cosine decay, gradient
clipping, bf16 autocast, a checkpoint after every epoch (`--resume` continues from it), validation
loss and greedy BLEU each epoch, and the best epoch (by validation BLEU) exported, or, with
`--average-last N`, the mean of the last N epochs' weights when validation BLEU prefers it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm

from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data.pairs import CORPORA, Corpus, Pair, load_corpus, references_by_source
from myelin_training.device import resolve_device
from myelin_training.reporting import MetricsLog, count, parameters, plot_curves
from myelin_training.translator import tokenizer as tk
from myelin_training.translator.averaging import average_weights, keep_epoch_weights, weights_path
from myelin_training.translator.batches import EncodedPairs, collate, encode_pairs, make_batches
from myelin_training.translator.config import RECIPES, TrainConfig
from myelin_training.translator.decoding import corpus_scores, translate_greedy
from myelin_training.translator.model import Translator, TranslatorConfig
from myelin_training.translator.publish import publish

NAME_FROM_CORPUS = "translator-CORPUS"  # replaced by translator-<corpus> after parsing
LOG_EVERY = 50  # steps between training-loss points in metrics.jsonl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="myelin-train translator", description="Train and export the English-French translator."
    )
    add_common_arguments(parser, default_name=NAME_FROM_CORPUS)
    parser.add_argument("--corpus", choices=CORPORA, default="tatoeba")
    parser.add_argument(
        "--config",
        choices=[r for r in RECIPES if r != "dry"],
        default="cpu",
        help="cpu: about an hour on 2 cores; quick: minutes (demo); gpu: the base Transformer for a GPU",
    )
    parser.add_argument("--epochs", type=int, help="override the config's epoch count")
    parser.add_argument("--max-tokens", type=int, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (no bfloat16 autocast)")
    parser.add_argument(
        "--average-last",
        type=int,
        help="export the mean of the last N epochs' weights if it beats the best epoch on validation BLEU",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint (default: <run-dir>/checkpoint-last.pt); a finished run only re-exports",
    )
    args = parser.parse_args(argv)
    require_paths(parser, args, "data_dir", "repository")
    if args.name == NAME_FROM_CORPUS:
        args.name = f"translator-{args.corpus}"
    dry_run_name(args)
    return args


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to the peak, then cosine decay to zero at `total_steps`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def sequence_loss(
    model: Translator, batch: tuple[torch.Tensor, ...], device: torch.device, *, smoothing: float, bf16: bool
) -> tuple[torch.Tensor, int]:
    """Mean token cross-entropy (with label smoothing) over the non-pad targets, and their count."""
    source_ids, source_mask, target_in, target_out = (t.to(device) for t in batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(source_ids, source_mask, target_in)  # (B, T, V)
    loss = F.cross_entropy(
        logits.float().flatten(0, 1),
        target_out.flatten(),
        ignore_index=tk.PAD_ID,
        label_smoothing=smoothing,
    )
    return loss, int((target_out != tk.PAD_ID).sum())


@torch.no_grad()
def validation_loss(model: Translator, data: EncodedPairs, device: torch.device, max_tokens: int, bf16: bool) -> float:
    """Mean per-token negative log-likelihood (no smoothing) on the validation pairs."""
    model.eval()
    total, count = 0.0, 0
    for index in make_batches(data, max_tokens):
        loss, n = sequence_loss(model, collate(data, index), device, smoothing=0.0, bf16=bf16)
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def bleu_on(
    model: Translator, tokenizer: Tokenizer, pairs: list[Pair], device: torch.device, bf16: bool
) -> tuple[dict[str, float], list[str], list[str]]:
    """Greedy translations of each distinct English sentence, scored against every pair's reference."""
    sentences, _ = references_by_source(pairs)
    translated = dict(zip(sentences, translate_greedy(model, tokenizer, sentences, device, autocast=bf16), strict=True))
    hypotheses = [translated[p.source] for p in pairs]
    references = [p.target for p in pairs]
    return corpus_scores(hypotheses, references), sentences, [translated[s] for s in sentences]


def validation_subset(pairs: list[Pair], size: int, seed: int = 0) -> list[Pair]:
    if len(pairs) <= size:
        return list(pairs)
    picked = np.random.default_rng(seed).choice(len(pairs), size, replace=False)
    return [pairs[i] for i in sorted(picked)]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never a half-written checkpoint


def resolve_resume(args: argparse.Namespace, run_dir: Path) -> dict[str, Any] | None:
    if args.resume is None:
        return None
    path = run_dir / "checkpoint-last.pt" if args.resume == "auto" else Path(args.resume)
    if not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path}")
    print(f"resuming from {path}")
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint


def choose_average(
    model: Translator,
    tokenizer: Tokenizer,
    val_pairs: list[Pair],
    device: torch.device,
    config: TrainConfig,
    run_dir: Path,
    best: dict[str, Any],
) -> tuple[float, int]:
    """Load the mean of the last `average_last` epochs into `model` if it beats the best epoch on the
    same validation BLEU the epochs were scored with; else leave the best epoch's weights.
    Returns the validation BLEU of what `model` holds and how many epochs it averages (0: none)."""
    epochs = range(config.epochs - config.average_last + 1, config.epochs + 1)
    paths = [weights_path(run_dir, epoch) for epoch in epochs]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        print(f"checkpoint averaging skipped: {', '.join(missing)} not in {run_dir}")
        return float(best["best_bleu"]), 0
    model.load_state_dict(average_weights(paths))
    scores, _, _ = bleu_on(model, tokenizer, val_pairs, device, config.bf16)
    kept = scores["bleu"] > best["best_bleu"]
    print(
        f"mean of epochs {epochs.start}-{epochs.stop - 1}: validation BLEU {scores['bleu']:.2f} "
        f"vs {best['best_bleu']:.2f} for epoch {best['epoch']}: exporting "
        + ("the mean" if kept else f"epoch {best['epoch']}")
    )
    if not kept:
        model.load_state_dict(best["model"])
        return float(best["best_bleu"]), 0
    return float(scores["bleu"]), len(paths)


@dataclass
class Job:
    """What a run trains on and with, settled before the model exists (a resumed run's own)."""

    args: argparse.Namespace
    run_dir: Path
    recipe_name: str
    model_config: TranslatorConfig
    config: TrainConfig
    device: torch.device
    corpus: Corpus
    tokenizer: Tokenizer
    train_data: EncodedPairs
    val_data: EncodedPairs
    val_bleu_pairs: list[Pair]  # scored each epoch
    test_pairs: list[Pair]
    checkpoint: dict[str, Any] | None  # the checkpoint to go on from


def prepare(args: argparse.Namespace) -> Job:
    """The configs (the recipe's and the flags', or the checkpoint's), the corpus, the tokenizer."""
    run_dir: Path = args.run_dir or Path("runs") / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = resolve_resume(args, run_dir)
    recipe_name = "dry" if args.dry_run else args.config
    if checkpoint is not None:
        model_config = TranslatorConfig(**checkpoint["model_config"])
        config = TrainConfig(**{**checkpoint["train_config"], "betas": tuple(checkpoint["train_config"]["betas"])})
        recipe_name = checkpoint["recipe"]
    else:
        model_config, config = RECIPES[recipe_name].model, RECIPES[recipe_name].train
    overrides = {
        "epochs": args.epochs,
        "max_tokens": args.max_tokens,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "average_last": args.average_last,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_bf16:
        config = dataclasses.replace(config, bf16=False)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    corpus = load_corpus(args.corpus, args.data_dir)
    train_pairs, val_pairs, test_pairs = (corpus.splits[s] for s in ("train", "validation", "test"))
    if config.train_subset:
        train_pairs = train_pairs[: config.train_subset]
        val_pairs, test_pairs = val_pairs[:64], test_pairs[:64]
    print(
        f"{corpus.name}: {len(corpus.splits['train'])} train / {len(corpus.splits['validation'])} validation / "
        f"{len(corpus.splits['test'])} test pairs (by English sentence: "
        + " / ".join(str(v["english_sentences"]) for v in corpus.sizes().values())
        + ")"
    )

    if checkpoint is not None:
        tokenizer = Tokenizer.from_str(checkpoint["tokenizer"])
    else:
        texts = (text for pair in train_pairs for text in (pair.source, pair.target))
        tokenizer = tk.train_tokenizer(texts, config.vocab_size)
    tokenizer.save(str(run_dir / "tokenizer.json"))
    model_config = dataclasses.replace(model_config, vocab_size=tokenizer.get_vocab_size())
    train_data = encode_pairs(tokenizer, train_pairs, max_tokens=config.max_sentence_tokens)
    print(
        f"vocabulary {tokenizer.get_vocab_size():,}; "
        f"{count(len(train_data), 'training pair')} within {count(config.max_sentence_tokens, 'token')}"
    )
    return Job(
        args=args,
        run_dir=run_dir,
        recipe_name=recipe_name,
        model_config=model_config,
        config=config,
        device=device,
        corpus=corpus,
        tokenizer=tokenizer,
        train_data=train_data,
        val_data=encode_pairs(tokenizer, val_pairs, max_tokens=model_config.max_positions - 2),
        val_bleu_pairs=validation_subset(val_pairs, config.validation_bleu_pairs),
        test_pairs=test_pairs,
        checkpoint=checkpoint,
    )


class Trainer:
    """The loop's state in one place: model, optimizer, step, best validation BLEU, the metrics log.
    `train()` runs the epochs left, checkpointing after each (and the best epoch apart)."""

    def __init__(self, job: Job) -> None:
        self.job, config = job, job.config
        self.model = Translator(job.model_config).to(job.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = len(make_batches(job.train_data, config.max_tokens))
        self.total_steps = config.epochs * self.steps_per_epoch
        self.start_epoch, self.step, self.best_bleu, wall_before = 1, 0, -1.0, 0.0
        self.log = MetricsLog(job.run_dir / "metrics.jsonl", append=job.checkpoint is not None)
        if job.checkpoint is not None:
            checkpoint = job.checkpoint
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.start_epoch, self.step = checkpoint["epoch"] + 1, checkpoint["step"]
            self.best_bleu, wall_before = checkpoint["best_bleu"], checkpoint["wall_seconds"]
            torch.set_rng_state(checkpoint["torch_rng"])
        n_params = sum(p.numel() for p in self.model.parameters())
        print(
            f"{job.args.name}: {parameters(n_params)}, {count(config.epochs, 'epoch')} of "
            f"~{count(self.steps_per_epoch, 'step')}, device {job.device}, "
            f"{count(torch.get_num_threads(), 'thread')}, bf16 {config.bf16}"
        )
        self.started = time.perf_counter() - wall_before

    def train(self) -> None:
        for epoch in range(self.start_epoch, self.job.config.epochs + 1):
            self.epoch(epoch)

    def epoch(self, epoch: int) -> None:
        """One pass over the length-bucketed batches, then validation loss and BLEU, checkpoints, curves."""
        job, config, model = self.job, self.job.config, self.model
        model.train()
        batches = make_batches(job.train_data, config.max_tokens, np.random.default_rng(job.args.seed * 1000 + epoch))
        loss_sum, tokens_sum, window_loss, window_tokens = 0.0, 0, 0.0, 0
        epoch_started = time.perf_counter()
        bar = tqdm(batches, desc=f"{job.args.name} epoch {epoch}/{config.epochs}", unit="batch", disable=None)
        for index in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, config, self.total_steps)
            loss, n = sequence_loss(
                model, collate(job.train_data, index), job.device, smoothing=config.label_smoothing, bf16=config.bf16
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            self.optimizer.step()
            self.step += 1
            value = loss.item()
            loss_sum, tokens_sum = loss_sum + value * n, tokens_sum + n
            window_loss, window_tokens = window_loss + value * n, window_tokens + n
            if self.step % LOG_EVERY == 0:
                self.log.write(
                    {
                        "epoch": epoch - 1 + bar.n / len(batches),
                        "step": self.step,
                        "train_loss": window_loss / window_tokens,
                        "lr": lr_at(self.step, config, self.total_steps),
                    }
                )
                window_loss, window_tokens = 0.0, 0
                rate = tokens_sum / (time.perf_counter() - epoch_started)
                bar.set_postfix(loss=f"{loss_sum / tokens_sum:.3f}", tok_s=f"{rate:.0f}")
        train_seconds = time.perf_counter() - epoch_started
        val_loss = validation_loss(model, job.val_data, job.device, config.max_tokens, config.bf16)
        scores, _, _ = bleu_on(model, job.tokenizer, job.val_bleu_pairs, job.device, config.bf16)
        improved = scores["bleu"] > self.best_bleu
        self.best_bleu = max(self.best_bleu, scores["bleu"])
        record = {
            "epoch": epoch,
            "step": self.step,
            "epoch_train_loss": loss_sum / max(tokens_sum, 1),
            "val_loss": val_loss,
            "val_bleu": scores["bleu"],
            "val_chrf": scores["chrf"],
            "target_tokens_per_second": tokens_sum / train_seconds,
            "elapsed_seconds": round(time.perf_counter() - self.started, 1),
        }
        self.log.write(record)
        tqdm.write(
            f"epoch {epoch}: train loss {record['epoch_train_loss']:.3f}, val loss {val_loss:.3f}, "
            f"val BLEU {scores['bleu']:.2f} (greedy, {len(job.val_bleu_pairs)} pairs), chrF {scores['chrf']:.2f}, "
            f"{train_seconds:.0f} s{' (best)' if improved else ''}"
        )
        snapshot = self.state(epoch)
        save_checkpoint(job.run_dir / "checkpoint-last.pt", snapshot)
        if improved:
            save_checkpoint(job.run_dir / "checkpoint-best.pt", snapshot)
        if config.average_last > 1:
            keep_epoch_weights(job.run_dir, model, epoch, config.average_last)
        plot_curves(
            self.log.records,
            job.run_dir / "curves.png",
            x="epoch",
            panels={"loss": ["train_loss", "val_loss"], "BLEU (validation, greedy)": ["val_bleu"]},
            title=f"{job.args.name}: best validation BLEU {self.best_bleu:.2f}",
        )

    def state(self, epoch: int) -> dict[str, Any]:
        job = self.job
        return {
            "recipe": job.recipe_name,
            "model_config": dataclasses.asdict(job.model_config),
            "train_config": dataclasses.asdict(job.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "best_bleu": self.best_bleu,
            "wall_seconds": time.perf_counter() - self.started,
            "torch_rng": torch.get_rng_state(),
            "tokenizer": job.tokenizer.to_str(),
            "corpus": job.args.corpus,
        }


def test_and_export(job: Job, trainer: Trainer) -> Path:
    """The best epoch's weights (or the mean of the last epochs'), scored on the test split, exported."""
    args, config, model, tokenizer = job.args, job.config, trainer.model, job.tokenizer
    wall = time.perf_counter() - trainer.started
    best = torch.load(job.run_dir / "checkpoint-best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    print(f"best epoch {best['epoch']} (validation BLEU {best['best_bleu']:.2f}); {wall:.0f} s of training")
    validation_bleu, averaged = best["best_bleu"], 0
    if config.average_last > 1:
        validation_bleu, averaged = choose_average(
            model, tokenizer, job.val_bleu_pairs, job.device, config, job.run_dir, best
        )
    # float32, like the exported graphs: these figures are what the service should reproduce (greedy).
    test_scores, test_sources, test_hypotheses = bleu_on(model, tokenizer, job.test_pairs, job.device, False)
    print(
        f"test ({len(job.test_pairs)} pairs, greedy, PyTorch): "
        f"BLEU {test_scores['bleu']:.2f}, chrF {test_scores['chrf']:.2f}"
    )
    evaluation = {
        "validation_bleu": validation_bleu,
        "validation_bleu_pairs": len(job.val_bleu_pairs),
        "test_bleu_greedy": test_scores["bleu"],
        "test_chrf_greedy": test_scores["chrf"],
        "test_pairs": len(job.test_pairs),
        "test_sentences": len(test_sources),
        "best_epoch": best["epoch"],
        "averaged_epochs": averaged,  # 0: the best epoch's weights alone
    }
    examples = np.linspace(0, len(test_sources) - 1, 10, dtype=int)
    version_dir = publish(
        args,
        model.cpu().float().eval(),
        tokenizer,
        corpus=job.corpus,
        recipe=job.recipe_name,
        config=config,
        evaluation=evaluation,
        training={
            "wall_time_seconds": round(wall, 1),
            "device": str(job.device),
            "threads": torch.get_num_threads(),
            "steps": trainer.step,
            "epochs_run": config.epochs,
            "train_pairs_used": len(job.train_data),
            "dry_run": bool(args.dry_run),
        },
        examples=[(test_sources[i], test_hypotheses[i]) for i in examples],
        side_files=[trainer.log.path, job.run_dir / "curves.png"],
    )
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def run(argv: list[str] | None = None) -> Path:
    job = prepare(parse_args(argv))
    trainer = Trainer(job)
    trainer.train()
    return test_and_export(job, trainer)


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
