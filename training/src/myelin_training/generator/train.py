"""myelin-train generator: train a character (or BPE) language model and export its step graph.

    myelin-train generator --data-dir DIR --repository DIR [--arch gpt|gru] [--corpus shakespeare]
                           [--config cpu|gpu|quick] [--device auto|cpu|cuda] [--resume] [--dry-run]

nanoGPT-style: random windows of block_size tokens from the training split, AdamW with linear
warm-up then cosine decay to min_lr, validation loss estimated every eval_interval iterations,
a checkpoint at each evaluation (--resume continues from it), metrics.jsonl and curves.png. The
weights exported are those of the evaluation with the lowest validation estimate (nanoGPT keeps
its best checkpoint the same way), and their validation loss is measured on the WHOLE validation
split, in consecutive windows of block_size tokens, and recorded in the manifest.

A config may set a time budget (`time_budget_s`): the cosine schedule then follows the fraction
of the budget used (or of max_iters, whichever is further). On CPU the budget counts this
process's own CPU time divided by its threads, not the wall clock: on cores shared with other jobs
a wall-clock budget would train less the busier the machine is, so the same config would give a
different model. The wall clock may overrun the budget by at most a quarter (then training ends
anyway); the manifest records both. On CUDA the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data import text as text_data
from myelin_training.device import resolve_device
from myelin_training.generator.export import export_model
from myelin_training.generator.model import GPT, GPTConfig, GRUConfig, GRULanguageModel
from myelin_training.reporting import MetricsLog, count, plot_curves

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    max_iters: int
    batch_size: int
    block_size: int
    lr: float
    min_lr: float
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 40
    time_budget_s: float = 0.0  # 0: schedule by iterations only
    bf16: bool = True  # autocast matmuls to bfloat16 (AVX-512 BF16 on CPU, tensor cores on GPU)
    compile: bool = False


# The configs per architecture: (model config, train config). block_size lives in both (the GPT's
# position table must cover the training windows).
CONFIGS: dict[str, dict[str, tuple[Any, TrainConfig]]] = {
    "gpt": {
        # ~30 minutes on 2 CPU cores: 4 layers, d_model 256, 3.2M parameters. No dropout (nanoGPT's
        # CPU recipe also drops it): with dropout a CPU step ran 2.3 it/s against 6.3 (attention
        # leaves SDPA's fused kernel). A fast machine fits more iterations than the loss needs
        # (validation turned up after 4,250 of 8,868 on a 2026-12-03 run), hence the best
        # evaluation's weights are exported.
        "cpu": (
            GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=256, dropout=0.0),
            TrainConfig(
                max_iters=20_000, batch_size=12, block_size=256, lr=1.5e-3, min_lr=1.5e-4, time_budget_s=28 * 60
            ),
        ),
        # nanoGPT's shakespeare-char GPU model: 6 layers, d_model 384, 10.7M parameters.
        "gpu": (
            GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
            TrainConfig(
                max_iters=5000, batch_size=64, block_size=256, lr=1e-3, min_lr=1e-4, warmup_iters=100, compile=True
            ),
        ),
        # `make demo`: two minutes of training, enough for recognisable words and speakers.
        "quick": (
            GPTConfig(block_size=256, n_layer=2, n_head=4, n_embd=128, dropout=0.0),
            TrainConfig(
                max_iters=5000,
                batch_size=8,
                block_size=256,
                lr=3e-3,
                min_lr=3e-4,
                warmup_iters=30,
                eval_interval=100,
                eval_batches=10,
                time_budget_s=120,
            ),
        ),
        "dry-run": (
            GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
            TrainConfig(
                max_iters=20,
                batch_size=4,
                block_size=32,
                lr=3e-3,
                min_lr=3e-4,
                warmup_iters=5,
                eval_interval=10,
                eval_batches=2,
                bf16=False,
            ),
        ),
    },
    "gru": {
        "cpu": (
            GRUConfig(n_embd=128, hidden=512, n_layer=2, dropout=0.1),
            TrainConfig(
                max_iters=20_000,
                batch_size=32,
                block_size=128,
                lr=2e-3,
                min_lr=2e-4,
                weight_decay=0.0,
                time_budget_s=8 * 60,
            ),
        ),
        "gpu": (
            GRUConfig(n_embd=256, hidden=1024, n_layer=3, dropout=0.25),
            TrainConfig(max_iters=8000, batch_size=64, block_size=256, lr=2e-3, min_lr=2e-4, weight_decay=0.0),
        ),
        "quick": (
            GRUConfig(n_embd=64, hidden=256, n_layer=1, dropout=0.0),
            TrainConfig(
                max_iters=5000,
                batch_size=16,
                block_size=128,
                lr=3e-3,
                min_lr=3e-4,
                weight_decay=0.0,
                warmup_iters=30,
                eval_interval=100,
                eval_batches=10,
                time_budget_s=120,
            ),
        ),
        "dry-run": (
            GRUConfig(n_embd=16, hidden=32, n_layer=1, dropout=0.0),
            TrainConfig(
                max_iters=20,
                batch_size=4,
                block_size=32,
                lr=3e-3,
                min_lr=3e-4,
                warmup_iters=5,
                weight_decay=0.0,
                eval_interval=10,
                eval_batches=2,
                bf16=False,
            ),
        ),
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="myelin-train generator", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, default_name="generator-<arch>-<corpus>")
    parser.add_argument("--arch", choices=sorted(CONFIGS), default="gpt")
    parser.add_argument("--corpus", choices=sorted(text_data.CORPORA), default="shakespeare")
    parser.add_argument("--text", type=Path, help="train on this UTF-8 file instead (90/10 split)")
    parser.add_argument("--tokenizer", choices=["char", "bpe"], help="default: char, bpe for wikitext2")
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    parser.add_argument(
        "--config", choices=["auto", "cpu", "gpu", "quick"], default="auto", help="auto: gpu on CUDA, else cpu"
    )
    parser.add_argument("--max-iters", type=int)
    parser.add_argument("--time-budget", type=float, help="minutes of training (0: schedule by iterations)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint.pt")
    args = parser.parse_args(argv)
    if args.text is None:
        require_paths(parser, args, "data_dir")
    require_paths(parser, args, "repository")
    return args


def choose_config(args: argparse.Namespace, device: torch.device) -> tuple[Any, TrainConfig, str]:
    name = "dry-run" if args.dry_run else args.config
    if name == "auto":
        name = "gpu" if device.type == "cuda" else "cpu"
    model_config, train = CONFIGS[args.arch][name]
    return dataclasses.replace(model_config), apply_overrides(train, args), name


def apply_overrides(train: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    overrides = {
        "max_iters": args.max_iters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "time_budget_s": None if args.time_budget is None else args.time_budget * 60,
    }
    train = dataclasses.replace(train, **{k: v for k, v in overrides.items() if v is not None})
    if args.lr is not None:
        train = dataclasses.replace(train, min_lr=args.lr / 10)
    if args.no_bf16:
        train = dataclasses.replace(train, bf16=False)
    if args.compile:
        train = dataclasses.replace(train, compile=True)
    return train


def lr_at(it: int, progress: float, c: TrainConfig) -> float:
    if it < c.warmup_iters:
        return c.lr * (it + 1) / c.warmup_iters
    ratio = min(1.0, max(0.0, progress))
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.lr - c.min_lr)


def batch(data: torch.Tensor, c: TrainConfig, g: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    starts = torch.randint(len(data) - c.block_size - 1, (c.batch_size,), generator=g)
    rows = torch.stack([data[s : s + c.block_size + 1] for s in starts.tolist()])  # (B, T + 1)
    rows = rows.to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def loss_of(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)  # (B, T, vocab)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor, c: TrainConfig, seed: int, device: torch.device) -> float:
    """Mean loss over eval_batches random windows (the same windows at every evaluation)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(c.eval_batches):
        x, y = batch(data, c, g, device)
        with autocast(device, c.bf16):
            losses.append(loss_of(model, x, y).item())
    model.train()
    return float(np.mean(losses))


@torch.no_grad()
def full_loss(model: nn.Module, data: torch.Tensor, c: TrainConfig, device: torch.device) -> float:
    """Mean next-token loss over the whole split, in consecutive windows of block_size, float32."""
    model.eval()
    n = (len(data) - 1) // c.block_size
    x = data[: n * c.block_size].view(n, c.block_size)
    y = data[1 : n * c.block_size + 1].view(n, c.block_size)
    total = 0.0
    for i in range(0, n, 32):
        logits = model(x[i : i + 32].to(device)).float()
        total += F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), y[i : i + 32].to(device).reshape(-1), reduction="sum"
        ).item()
    model.train()
    return total / (n * c.block_size)


WALL_OVERRUN = 1.25  # the wall clock may exceed a CPU-time budget by this factor, no more
BAR_STEPS = 1000  # the progress bar counts thousandths of the run


class BudgetClock:
    """Seconds of training so far: `wall()` and `budget()` (CPU time per thread on CPU, else wall)."""

    def __init__(self, device: torch.device, wall_before: float, budget_before: float) -> None:
        self.kind = "cpu_time_per_thread" if device.type == "cpu" else "wall"
        self._wall0 = time.perf_counter() - wall_before
        self._cpu0 = time.process_time()
        self._budget_before = budget_before
        self._threads = max(1, torch.get_num_threads())

    def wall(self) -> float:
        return time.perf_counter() - self._wall0

    def budget(self) -> float:
        if self.kind == "wall":
            return self.wall()
        return self._budget_before + (time.process_time() - self._cpu0) / self._threads


def build(arch: str, config: Any) -> nn.Module:
    return GPT(config) if arch == "gpt" else GRULanguageModel(config)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    corpus = text_data.load_corpus(args.corpus, args.data_dir, args.text)
    kind = args.tokenizer or ("bpe" if args.corpus == "wikitext2" and args.text is None else "char")
    if args.name == "generator-<arch>-<corpus>":
        args.name = f"generator-{args.arch}-{corpus.name}" + (
            "-bpe" if kind == "bpe" and corpus.name != "wikitext2" else ""
        )
    dry_run_name(args)
    run_dir = args.run_dir or Path("runs") / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT
    if args.resume and not checkpoint_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}; train without --resume first")
    resume = torch.load(checkpoint_path, weights_only=False) if args.resume else None

    model_config, train, config_name = choose_config(args, device)
    if args.dry_run:
        corpus = dataclasses.replace(corpus, train_text=corpus.train_text[:20_000], val_text=corpus.val_text[:4_000])
    if resume is not None:
        tokenizer = Tokenizer.from_str(resume["tokenizer"])
        model_config = type(model_config)(**resume["model_config"])
        train = apply_overrides(TrainConfig(**resume["train_config"]), args)
    elif kind == "char":
        tokenizer = text_data.char_tokenizer(corpus.train_text)
    else:
        tokenizer = text_data.bpe_tokenizer(corpus.train_text, args.vocab_size)
    model_config = dataclasses.replace(model_config, vocab_size=tokenizer.get_vocab_size())
    train_ids = torch.from_numpy(text_data.encode(tokenizer, corpus.train_text))
    val_ids = torch.from_numpy(text_data.encode(tokenizer, corpus.val_text))
    print(
        f"{args.name}: {config_name} config, {kind} tokenizer ({count(tokenizer.get_vocab_size(), 'token')}), "
        f"{len(train_ids):,} train / {len(val_ids):,} validation tokens ({corpus.split}), device {device}, "
        f"{count(torch.get_num_threads(), 'thread')}"
    )

    model = build(args.arch, model_config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.lr,
        betas=(0.9, train.beta2),
    )
    start_iter, elapsed_before, budget_before = 0, 0.0, 0.0
    # the weights of the lowest validation estimate so far: the ones exported (see the module docstring)
    best: dict[str, Any] = {"val_loss": float("inf"), "iter": 0, "model": None}
    g = torch.Generator().manual_seed(args.seed)
    log = MetricsLog(run_dir / "metrics.jsonl", append=resume is not None)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        g.set_state(resume["generator"])
        start_iter, elapsed_before = resume["iter"], resume["elapsed"]
        budget_before = resume.get("budget_elapsed", elapsed_before)
        best = resume.get("best", best)
        print(f"resumed from {checkpoint_path} at iteration {start_iter} ({elapsed_before:.0f} s trained)")
    forward = torch.compile(model) if train.compile else model

    def save(it: int, elapsed: float) -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": g.get_state(),
                "iter": it,
                "elapsed": elapsed,
                "budget_elapsed": clock.budget(),
                "model_config": dataclasses.asdict(model_config),
                "train_config": dataclasses.asdict(train),
                "tokenizer": tokenizer.to_str(),
                "arch": args.arch,
                "best": best,
            },
            run_dir / (CHECKPOINT + ".tmp"),
        )
        (run_dir / (CHECKPOINT + ".tmp")).replace(checkpoint_path)

    clock = BudgetClock(device, elapsed_before, budget_before)

    def progress_at(it: int) -> float:
        progress = (it - train.warmup_iters) / max(1, train.max_iters - train.warmup_iters)
        if train.time_budget_s:
            used = max(clock.budget(), clock.wall() / WALL_OVERRUN)
            progress = max(progress, used / train.time_budget_s)
        return progress

    def done_fraction(it: int) -> float:
        """What the bar shows: the share of the run done, whichever ends it first (iterations or the budget);
        a budget run's bar and ETA follow the budget, not max_iters it will never reach."""
        done = it / train.max_iters
        if train.time_budget_s:
            done = max(done, max(clock.budget(), clock.wall() / WALL_OVERRUN) / train.time_budget_s)
        return min(done, 1.0)

    it, loss_sum, loss_n, lr = start_iter, 0.0, 0, train.lr

    def evaluate(it: int, lr: float) -> None:
        nonlocal loss_sum, loss_n
        val = estimate_loss(model, val_ids, train, args.seed, device)
        elapsed = clock.wall()
        record = {
            "iter": it,
            "train_loss": loss_sum / max(1, loss_n),
            "val_loss": val,
            "lr": lr,
            "elapsed_seconds": round(elapsed, 1),
            "budget_seconds": round(clock.budget(), 1),
            "tokens": it * train.batch_size * train.block_size,
        }
        log.write(record)
        bar.set_postfix(iter=it, train=f"{record['train_loss']:.3f}", val=f"{val:.3f}")
        tqdm.write(
            f"iter {it}: train loss {record['train_loss']:.4f}, val loss {val:.4f}, lr {lr:.2e}, {elapsed:.0f} s"
        )
        loss_sum, loss_n = 0.0, 0
        if val < best["val_loss"]:
            best.update(val_loss=val, iter=it, model={k: v.detach().clone() for k, v in model.state_dict().items()})
        save(it, elapsed)

    # Per mille of the run (see done_fraction); a terminal only: no carriage returns in logs.
    bar = tqdm(
        total=BAR_STEPS,
        initial=round(BAR_STEPS * done_fraction(start_iter)),
        desc=args.name,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
        disable=None,
    )
    model.train()
    while it < train.max_iters and (progress := progress_at(it)) < 1.0:
        lr = lr_at(it, progress, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batch(train_ids, train, g, device)
        with autocast(device, train.bf16):
            loss = loss_of(forward, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        it += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(round(BAR_STEPS * done_fraction(it)) - bar.n)
        if it % train.eval_interval == 0:
            evaluate(it, lr)
    bar.update(BAR_STEPS - bar.n)  # the budget or the iterations ran out: the run is done
    if loss_n:  # the last iterations since the last evaluation
        evaluate(it, lr)
    bar.close()
    wall, budget_used = clock.wall(), clock.budget()
    exported = it  # a checkpoint written before best weights were kept has only its last ones
    if best["model"] is not None:
        model.load_state_dict(best["model"])
        exported = best["iter"]
        print(
            f"{args.name}: exporting the weights of iteration {exported} (validation estimate {best['val_loss']:.4f})"
        )
    val_loss = full_loss(model, val_ids, train, device)
    # the training-loss estimate of the exported iteration, beside its validation loss
    train_loss = next((r["train_loss"] for r in log.records if r["iter"] == exported), float("nan"))
    print(f"{args.name}: validation loss {val_loss:.4f} (whole split) at iteration {exported} of {it}, {wall:.0f} s")
    plot = plot_curves(
        log.records,
        run_dir / "curves.png",
        x="iter",
        panels={"loss": ["train_loss", "val_loss"]},
        title=f"{args.name}: validation loss {val_loss:.4f} (iteration {exported})",
    )
    version_dir = export_model(
        model,
        arch=args.arch,
        repository=args.repository,
        name=args.name,
        tokenizer=tokenizer,
        tokenizer_kind=kind,
        seed=args.seed,
        side_files=[log.path, plot],
        manifest_extra={
            "training": {
                "config": config_name,
                "train_config": dataclasses.asdict(train),
                "iterations": it,
                "exported_iteration": exported,  # the lowest validation estimate (see `best`)
                "tokens_seen": it * train.batch_size * train.block_size,
                "parameters": n_params,
                "seed": args.seed,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "wall_time_seconds": round(wall, 1),
                "budget_seconds": round(budget_used, 1),
                "budget_clock": clock.kind,
                "dry_run": bool(args.dry_run),
                "train_tokens": len(train_ids),
                "validation_tokens": len(val_ids),
            },
            "dataset": corpus.fingerprint(),
            "evaluation": {
                "validation_loss": val_loss,
                "validation_perplexity": math.exp(val_loss),
                "train_loss": train_loss,
            },
            "files": {"metrics": "metrics.jsonl", "curves": "curves.png"},
        },
    )
    print(f"exported {args.name} to {version_dir}")


if __name__ == "__main__":
    main()
