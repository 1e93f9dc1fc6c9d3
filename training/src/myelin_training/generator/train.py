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
from myelin_training.generator.config import RECIPES, TrainConfig
from myelin_training.generator.export import export_model
from myelin_training.generator.model import GPT, GRULanguageModel
from myelin_training.reporting import MetricsLog, count, plot_curves

CHECKPOINT = "checkpoint.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="myelin-train generator", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, default_name="generator-<arch>-<corpus>")
    parser.add_argument("--arch", choices=sorted(RECIPES), default="gpt")
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
    recipe = RECIPES[args.arch][name]
    return dataclasses.replace(recipe.model), apply_overrides(recipe.train, args), name


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


@dataclass
class Job:
    """What a run trains on and with: settled before the model exists (and kept by a resumed run)."""

    args: argparse.Namespace
    device: torch.device
    run_dir: Path
    corpus: text_data.Corpus
    tokenizer: Tokenizer
    tokenizer_kind: str
    config_name: str
    model_config: Any  # GPTConfig | GRUConfig
    train: TrainConfig
    train_ids: torch.Tensor  # (N,) token ids
    val_ids: torch.Tensor
    resume: dict[str, Any] | None  # the checkpoint to go on from

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT


def prepare(args: argparse.Namespace) -> Job:
    """The corpus, the tokenizer and the configs (the checkpoint's when resuming)."""
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
    job = Job(
        args=args,
        device=device,
        run_dir=run_dir,
        corpus=corpus,
        tokenizer=tokenizer,
        tokenizer_kind=kind,
        config_name=config_name,
        model_config=model_config,
        train=train,
        train_ids=torch.from_numpy(text_data.encode(tokenizer, corpus.train_text)),
        val_ids=torch.from_numpy(text_data.encode(tokenizer, corpus.val_text)),
        resume=resume,
    )
    print(
        f"{args.name}: {config_name} config, {kind} tokenizer ({count(tokenizer.get_vocab_size(), 'token')}), "
        f"{len(job.train_ids):,} train / {len(job.val_ids):,} validation tokens ({corpus.split}), device {device}, "
        f"{count(torch.get_num_threads(), 'thread')}"
    )
    return job


class Trainer:
    """The loop's state in one place: model, optimizer, sampling generator, clock, the running loss and
    the best evaluation so far. `train()` runs iterations until max_iters or the budget ends the run."""

    def __init__(self, job: Job) -> None:
        self.job, self.train_config, self.device = job, job.train, job.device
        c = job.train
        self.model = build(job.args.arch, job.model_config).to(job.device)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=c.lr,
            betas=(0.9, c.beta2),
        )
        self.it, elapsed_before, budget_before = 0, 0.0, 0.0
        # the weights of the lowest validation estimate so far: the ones exported (see the module docstring)
        self.best: dict[str, Any] = {"val_loss": float("inf"), "iter": 0, "model": None}
        self.g = torch.Generator().manual_seed(job.args.seed)
        self.log = MetricsLog(job.run_dir / "metrics.jsonl", append=job.resume is not None)
        if job.resume is not None:
            resume = job.resume
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.g.set_state(resume["generator"])
            self.it, elapsed_before = resume["iter"], resume["elapsed"]
            budget_before = resume.get("budget_elapsed", elapsed_before)
            self.best = resume.get("best", self.best)
            print(f"resumed from {job.checkpoint_path} at iteration {self.it} ({elapsed_before:.0f} s trained)")
        self.forward = torch.compile(self.model) if c.compile else self.model
        self.clock = BudgetClock(job.device, elapsed_before, budget_before)
        self.loss_sum, self.loss_n, self.lr = 0.0, 0, c.lr  # the training loss since the last evaluation
        # Per mille of the run (see done_fraction); a terminal only: no carriage returns in logs.
        self.bar = tqdm(
            total=BAR_STEPS,
            initial=round(BAR_STEPS * self.done_fraction()),
            desc=job.args.name,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
            disable=None,
        )

    def used(self) -> float:
        """Seconds of the time budget spent (the wall clock counted at most WALL_OVERRUN times over)."""
        return max(self.clock.budget(), self.clock.wall() / WALL_OVERRUN)

    def progress(self) -> float:
        """How far along the schedule the run is: iterations past warm-up, or the budget when further."""
        c = self.train_config
        progress = (self.it - c.warmup_iters) / max(1, c.max_iters - c.warmup_iters)
        return max(progress, self.used() / c.time_budget_s) if c.time_budget_s else progress

    def done_fraction(self) -> float:
        """What the bar shows: the share of the run done, whichever ends it first (iterations or the budget);
        a budget run's bar and ETA follow the budget, not max_iters it will never reach."""
        c = self.train_config
        done = self.it / c.max_iters
        return min(max(done, self.used() / c.time_budget_s) if c.time_budget_s else done, 1.0)

    def train(self) -> None:
        c, job = self.train_config, self.job
        self.model.train()
        while self.it < c.max_iters and (progress := self.progress()) < 1.0:
            self.lr = lr_at(self.it, progress, c)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            x, y = batch(job.train_ids, c, self.g, self.device)
            with autocast(self.device, c.bf16):
                loss = loss_of(self.forward, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            self.it += 1
            self.loss_sum, self.loss_n = self.loss_sum + loss.item(), self.loss_n + 1
            self.bar.update(round(BAR_STEPS * self.done_fraction()) - self.bar.n)
            if self.it % c.eval_interval == 0:
                self.evaluate()
        self.bar.update(BAR_STEPS - self.bar.n)  # the budget or the iterations ran out: the run is done
        if self.loss_n:  # the last iterations since the last evaluation
            self.evaluate()
        self.bar.close()

    def evaluate(self) -> None:
        """Estimate the validation loss, log it beside the training loss, keep the best weights, checkpoint."""
        job = self.job
        val = estimate_loss(self.model, job.val_ids, self.train_config, job.args.seed, self.device)
        elapsed = self.clock.wall()
        record = {
            "iter": self.it,
            "train_loss": self.loss_sum / max(1, self.loss_n),
            "val_loss": val,
            "lr": self.lr,
            "elapsed_seconds": round(elapsed, 1),
            "budget_seconds": round(self.clock.budget(), 1),
            "tokens": self.it * self.train_config.batch_size * self.train_config.block_size,
        }
        self.log.write(record)
        self.bar.set_postfix(iter=self.it, train=f"{record['train_loss']:.3f}", val=f"{val:.3f}")
        tqdm.write(
            f"iter {self.it}: train loss {record['train_loss']:.4f}, val loss {val:.4f}, lr {self.lr:.2e}, "
            f"{elapsed:.0f} s"
        )
        self.loss_sum, self.loss_n = 0.0, 0
        if val < self.best["val_loss"]:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best.update(val_loss=val, iter=self.it, model=weights)
        self.save(elapsed)

    def save(self, elapsed: float) -> None:
        job = self.job
        tmp = job.run_dir / (CHECKPOINT + ".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.g.get_state(),
                "iter": self.it,
                "elapsed": elapsed,
                "budget_elapsed": self.clock.budget(),
                "model_config": dataclasses.asdict(job.model_config),
                "train_config": dataclasses.asdict(self.train_config),
                "tokenizer": job.tokenizer.to_str(),
                "arch": job.args.arch,
                "best": self.best,
            },
            tmp,
        )
        tmp.replace(job.checkpoint_path)

    def load_best(self) -> int:
        """Put the best evaluation's weights in the model; the iteration they come from."""
        if self.best["model"] is None:  # a checkpoint written before best weights were kept has only its last ones
            return self.it
        self.model.load_state_dict(self.best["model"])
        print(
            f"{self.job.args.name}: exporting the weights of iteration {self.best['iter']} "
            f"(validation estimate {self.best['val_loss']:.4f})"
        )
        return int(self.best["iter"])


def export(job: Job, trainer: Trainer) -> Path:
    """The best weights, measured on the whole validation split, exported with their manifest."""
    args, train, model = job.args, job.train, trainer.model
    wall, budget_used, it = trainer.clock.wall(), trainer.clock.budget(), trainer.it
    exported = trainer.load_best()
    val_loss = full_loss(model, job.val_ids, train, job.device)
    # the training-loss estimate of the exported iteration, beside its validation loss
    train_loss = next((r["train_loss"] for r in trainer.log.records if r["iter"] == exported), float("nan"))
    print(f"{args.name}: validation loss {val_loss:.4f} (whole split) at iteration {exported} of {it}, {wall:.0f} s")
    plot = plot_curves(
        trainer.log.records,
        job.run_dir / "curves.png",
        x="iter",
        panels={"loss": ["train_loss", "val_loss"]},
        title=f"{args.name}: validation loss {val_loss:.4f} (iteration {exported})",
    )
    version_dir = export_model(
        model,
        arch=args.arch,
        repository=args.repository,
        name=args.name,
        tokenizer=job.tokenizer,
        tokenizer_kind=job.tokenizer_kind,
        seed=args.seed,
        side_files=[trainer.log.path, plot],
        manifest_extra={
            "training": {
                "config": job.config_name,
                "train_config": dataclasses.asdict(train),
                "iterations": it,
                "exported_iteration": exported,  # the lowest validation estimate (see Trainer.best)
                "tokens_seen": it * train.batch_size * train.block_size,
                "parameters": trainer.parameters,
                "seed": args.seed,
                "device": str(job.device),
                "threads": torch.get_num_threads(),
                "wall_time_seconds": round(wall, 1),
                "budget_seconds": round(budget_used, 1),
                "budget_clock": trainer.clock.kind,
                "dry_run": bool(args.dry_run),
                "train_tokens": len(job.train_ids),
                "validation_tokens": len(job.val_ids),
            },
            "dataset": job.corpus.fingerprint(),
            "evaluation": {
                "validation_loss": val_loss,
                "validation_perplexity": math.exp(val_loss),
                "train_loss": train_loss,
            },
            "files": {"metrics": "metrics.jsonl", "curves": "curves.png"},
        },
    )
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def main(argv: list[str] | None = None) -> None:
    job = prepare(parse_args(argv))
    trainer = Trainer(job)
    trainer.train()
    export(job, trainer)


if __name__ == "__main__":
    main()
