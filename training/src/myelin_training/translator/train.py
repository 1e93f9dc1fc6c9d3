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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm

from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data.pairs import CORPORA, Pair, load_corpus, references_by_source
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


def run(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
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
    val_data = encode_pairs(tokenizer, val_pairs, max_tokens=model_config.max_positions - 2)
    val_bleu_pairs = validation_subset(val_pairs, config.validation_bleu_pairs)
    print(
        f"vocabulary {tokenizer.get_vocab_size():,}; "
        f"{count(len(train_data), 'training pair')} within {count(config.max_sentence_tokens, 'token')}"
    )

    model = Translator(model_config).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    steps_per_epoch = len(make_batches(train_data, config.max_tokens))
    total_steps = config.epochs * steps_per_epoch
    start_epoch, step, best_bleu, wall_before = 1, 0, -1.0, 0.0
    log = MetricsLog(run_dir / "metrics.jsonl", append=checkpoint is not None)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step = checkpoint["epoch"] + 1, checkpoint["step"]
        best_bleu, wall_before = checkpoint["best_bleu"], checkpoint["wall_seconds"]
        torch.set_rng_state(checkpoint["torch_rng"])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.name}: {parameters(n_params)}, {count(config.epochs, 'epoch')} of "
        f"~{count(steps_per_epoch, 'step')}, device {device}, {count(torch.get_num_threads(), 'thread')}, "
        f"bf16 {config.bf16}"
    )

    started = time.perf_counter() - wall_before

    def state(epoch: int) -> dict[str, Any]:
        return {
            "recipe": recipe_name,
            "model_config": dataclasses.asdict(model_config),
            "train_config": dataclasses.asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "best_bleu": best_bleu,
            "wall_seconds": time.perf_counter() - started,
            "torch_rng": torch.get_rng_state(),
            "tokenizer": tokenizer.to_str(),
            "corpus": args.corpus,
        }

    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        batches = make_batches(train_data, config.max_tokens, np.random.default_rng(args.seed * 1000 + epoch))
        loss_sum, tokens_sum, window_loss, window_tokens = 0.0, 0, 0.0, 0
        epoch_started = time.perf_counter()
        bar = tqdm(batches, desc=f"{args.name} epoch {epoch}/{config.epochs}", unit="batch", disable=None)
        for index in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config, total_steps)
            loss, n = sequence_loss(
                model, collate(train_data, index), device, smoothing=config.label_smoothing, bf16=config.bf16
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            step += 1
            value = loss.item()
            loss_sum, tokens_sum = loss_sum + value * n, tokens_sum + n
            window_loss, window_tokens = window_loss + value * n, window_tokens + n
            if step % LOG_EVERY == 0:
                log.write(
                    {
                        "epoch": epoch - 1 + bar.n / len(batches),
                        "step": step,
                        "train_loss": window_loss / window_tokens,
                        "lr": lr_at(step, config, total_steps),
                    }
                )
                window_loss, window_tokens = 0.0, 0
                rate = tokens_sum / (time.perf_counter() - epoch_started)
                bar.set_postfix(loss=f"{loss_sum / tokens_sum:.3f}", tok_s=f"{rate:.0f}")
        train_seconds = time.perf_counter() - epoch_started
        val_loss = validation_loss(model, val_data, device, config.max_tokens, config.bf16)
        scores, _, _ = bleu_on(model, tokenizer, val_bleu_pairs, device, config.bf16)
        improved = scores["bleu"] > best_bleu
        best_bleu = max(best_bleu, scores["bleu"])
        record = {
            "epoch": epoch,
            "step": step,
            "epoch_train_loss": loss_sum / max(tokens_sum, 1),
            "val_loss": val_loss,
            "val_bleu": scores["bleu"],
            "val_chrf": scores["chrf"],
            "target_tokens_per_second": tokens_sum / train_seconds,
            "elapsed_seconds": round(time.perf_counter() - started, 1),
        }
        log.write(record)
        tqdm.write(
            f"epoch {epoch}: train loss {record['epoch_train_loss']:.3f}, val loss {val_loss:.3f}, "
            f"val BLEU {scores['bleu']:.2f} (greedy, {len(val_bleu_pairs)} pairs), chrF {scores['chrf']:.2f}, "
            f"{train_seconds:.0f} s{' (best)' if improved else ''}"
        )
        snapshot = state(epoch)
        save_checkpoint(run_dir / "checkpoint-last.pt", snapshot)
        if improved:
            save_checkpoint(run_dir / "checkpoint-best.pt", snapshot)
        if config.average_last > 1:
            keep_epoch_weights(run_dir, model, epoch, config.average_last)
        plot_curves(
            log.records,
            run_dir / "curves.png",
            x="epoch",
            panels={"loss": ["train_loss", "val_loss"], "BLEU (validation, greedy)": ["val_bleu"]},
            title=f"{args.name}: best validation BLEU {best_bleu:.2f}",
        )
    wall = time.perf_counter() - started

    best_path = run_dir / "checkpoint-best.pt"
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    print(f"best epoch {best['epoch']} (validation BLEU {best['best_bleu']:.2f}); {wall:.0f} s of training")
    validation_bleu, averaged = best["best_bleu"], 0
    if config.average_last > 1:
        validation_bleu, averaged = choose_average(model, tokenizer, val_bleu_pairs, device, config, run_dir, best)
    # float32, like the exported graphs: these figures are what the service should reproduce (greedy).
    test_scores, test_sources, test_hypotheses = bleu_on(model, tokenizer, test_pairs, device, False)
    print(
        f"test ({len(test_pairs)} pairs, greedy, PyTorch): "
        f"BLEU {test_scores['bleu']:.2f}, chrF {test_scores['chrf']:.2f}"
    )
    evaluation = {
        "validation_bleu": validation_bleu,
        "validation_bleu_pairs": len(val_bleu_pairs),
        "test_bleu_greedy": test_scores["bleu"],
        "test_chrf_greedy": test_scores["chrf"],
        "test_pairs": len(test_pairs),
        "test_sentences": len(test_sources),
        "best_epoch": best["epoch"],
        "averaged_epochs": averaged,  # 0: the best epoch's weights alone
    }
    model = model.cpu().float().eval()
    version_dir = publish(
        args,
        model,
        tokenizer,
        corpus=corpus,
        recipe=recipe_name,
        config=config,
        evaluation=evaluation,
        training={
            "wall_time_seconds": round(wall, 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "steps": step,
            "epochs_run": config.epochs,
            "train_pairs_used": len(train_data),
            "dry_run": bool(args.dry_run),
        },
        examples=[(test_sources[i], test_hypotheses[i]) for i in np.linspace(0, len(test_sources) - 1, 10, dtype=int)],
        side_files=[log.path, run_dir / "curves.png"],
    )
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
