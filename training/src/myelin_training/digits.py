"""The training job both MNIST classifiers share: data, augmentation, loop, evaluation, export.

`mlp/train.py` and `cnn/train.py` each name their network and its recipes (`mlp/config.py`,
`cnn/config.py`); this module does the rest, so the two models are trained, measured and exported
the same way. `run()` reads as build (`prepare`, `Trainer`), loop (`Trainer.train`), export.

The exported graph takes what a client sends: (B, 28, 28) float32 pixels in [0, 1], 0 = background.
Normalisation and the softmax live inside the graph, so the service (and any KServe v2 client)
only scales uint8 pixels by 1/255.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from myelin_training import checkpoints, export
from myelin_training.args import add_common_arguments, dry_run_name, require_paths
from myelin_training.data import mnist
from myelin_training.device import resolve_device
from myelin_training.reporting import MetricsLog, plot_curves

MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics (pixels scaled to [0, 1])
MAX_EXPORT_BATCH = 4096


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    weight_decay: float
    augment: bool
    batch_size: int = 128
    validation_size: int = 5000
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class Recipe:
    model: Any  # the network's config dataclass; it travels into the manifest
    train: TrainConfig


@dataclass(frozen=True)
class DigitClassifier:
    """One digit classifier: its network and its named recipes (`full`, `quick`)."""

    arch: str
    name: str
    build: Callable[[Any], nn.Module]
    recipes: dict[str, Recipe]


class PixelsToProbabilities(nn.Module):
    """The served graph: (B, H, W) pixels in [0, 1] -> (B, classes) probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = ((image - MEAN) / STD).unsqueeze(1)  # (B, 1, H, W)
        return torch.softmax(self.net(x), dim=-1)


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, 1, H, W), the networks' training input."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def random_affine(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations (±10°), scalings (±10%) and shifts (±2 px) of (B, 1, H, W) pixels in [0, 1]."""
    b, _, h, _ = pixels.shape
    u = torch.rand(b, 4, generator=generator, device="cpu").to(pixels.device) * 2 - 1
    angle, scale = u[:, 0] * math.radians(10), 1 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (2 * 2 / h)  # affine_grid coordinates span 2 over the image: 2 px = 4/h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, padding_mode="zeros", align_corners=False)  # background stays 0


def batch_inputs(images: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
    pixels = images.float().unsqueeze(1) / 255.0  # (B, 1, H, W)
    if augment:
        pixels = random_affine(pixels, generator)
    return (pixels - MEAN) / STD


@torch.no_grad()
def evaluate(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and the predicted labels."""
    net.eval()
    losses, predictions = [], []
    for i in range(0, len(labels), batch):
        logits = net(to_inputs(images[i : i + batch]))
        losses.append(F.cross_entropy(logits, labels[i : i + batch], reduction="sum").item())
        predictions.append(logits.argmax(-1).cpu())
    pred = torch.cat(predictions).numpy()
    return sum(losses) / len(labels), float((pred == labels.cpu().numpy()).mean()), pred


def onnx_predictions(path: Path, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """What the exported graph predicts for uint8 images: the figure the service must reproduce."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [
        session.run(["probabilities"], {"image": images[i : i + batch].astype(np.float32) / 255.0})[0].argmax(-1)
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out).astype(np.uint8)


def predictions_digest(predictions: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(predictions, dtype=np.uint8).tobytes()).hexdigest()


def parse_args(classifier: DigitClassifier, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"myelin-train {classifier.arch}", description=f"Train and export {classifier.name}."
    )
    add_common_arguments(parser, default_name=classifier.name)
    parser.add_argument(
        "--config", choices=list(classifier.recipes), default="full", help="full: the accuracy targets; quick: minutes"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epoch count")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue from <run-dir>/{checkpoints.CHECKPOINT} (written after every epoch) with its configs; "
        "--epochs sets a new total (the schedule stretched to it); a finished run only exports again",
    )
    args = parser.parse_args(argv)
    require_paths(parser, args, "data_dir", "repository")
    dry_run_name(args)
    return args


@dataclass
class Job:
    """What a run trains on and with, settled before the network exists."""

    args: argparse.Namespace
    classifier: DigitClassifier
    model_config: Any
    config: TrainConfig
    device: torch.device
    run_dir: Path
    resume: dict[str, Any] | None  # the checkpoint to go on from
    train: mnist.MnistSplit
    val: mnist.MnistSplit
    test: mnist.MnistSplit

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoints.CHECKPOINT

    def tensors(self, split: mnist.MnistSplit) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(split.images).to(self.device), torch.from_numpy(split.labels).to(self.device)


def prepare(classifier: DigitClassifier, args: argparse.Namespace) -> Job:
    """The config (the recipe's, the flags', or the checkpoint's when resuming) and the splits."""
    chosen = classifier.recipes[args.config]
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    config = dataclasses.replace(chosen.train, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_augment:
        config = dataclasses.replace(config, augment=False)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    run_dir = args.run_dir or Path("runs") / args.name
    resume = checkpoints.load(run_dir / checkpoints.CHECKPOINT) if args.resume else None

    train_full = mnist.load_split(args.data_dir, "train")
    test = mnist.load_split(args.data_dir, "test")
    val_size = config.validation_size
    if args.dry_run:
        train_full = mnist.MnistSplit(train_full.images[:768], train_full.labels[:768])
        test = mnist.MnistSplit(test.images[:512], test.labels[:512])
        config, val_size = dataclasses.replace(config, epochs=args.epochs or 1), 256
    if resume is not None:
        config = TrainConfig(**{**resume["train_config"], "epochs": args.epochs or resume["train_config"]["epochs"]})
    train, val = mnist.train_validation_split(train_full, val_size, args.seed)
    return Job(args, classifier, chosen.model, config, device, run_dir, resume, train, val, test)


class Trainer:
    """The loop's state in one place: network, optimizer, one-cycle schedule, the sampling generator,
    the metrics log. `train()` runs the epochs left, checkpointing after each."""

    def __init__(self, job: Job) -> None:
        self.job, config = job, job.config
        (self.x_train, self.y_train), (self.x_val, self.y_val) = job.tensors(job.train), job.tensors(job.val)
        self.net = job.classifier.build(job.model_config).to(job.device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.y_train) / config.batch_size)
        self.scheduler = self.one_cycle(config.epochs)
        self.generator = torch.Generator().manual_seed(job.args.seed)
        self.log = MetricsLog(job.run_dir / "metrics.jsonl", append=job.resume is not None)
        self.start_epoch, wall_before = 1, 0.0
        if job.resume is not None:
            wall_before = self.restore(job.resume)
        self.started = time.perf_counter() - wall_before

    def one_cycle(self, epochs: int, done_epochs: int = 0) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=self.job.config.lr,
            total_steps=epochs * self.steps_per_epoch,
            pct_start=0.15,
            last_epoch=done_epochs * self.steps_per_epoch - 1,
        )

    def restore(self, resume: dict[str, Any]) -> float:
        """Go on from a checkpoint; the seconds it had trained."""
        config = self.job.config
        self.net.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        self.start_epoch = resume["epoch"] + 1
        if resume["train_config"]["epochs"] == config.epochs:
            self.scheduler.load_state_dict(resume["scheduler"])
        else:  # a new total: the one cycle stretched to it, from the step the run had reached
            self.scheduler = self.one_cycle(max(config.epochs, resume["epoch"]), resume["epoch"])
        self.log.keep_until("epoch", resume["epoch"])
        print(f"resumed from {self.job.checkpoint_path} after epoch {resume['epoch']} of {config.epochs}")
        return float(resume["wall_seconds"])

    def train(self) -> None:
        for epoch in range(self.start_epoch, self.job.config.epochs + 1):
            record = self.epoch(epoch)
            self.log.write(record)
            self.save(epoch)
            tqdm.write(
                f"epoch {epoch}: train loss {record['train_loss']:.4f} val loss {record['val_loss']:.4f} "
                f"val acc {record['val_accuracy']:.4f}"
            )

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split in a random order, then the validation figures."""
        job, config, net = self.job, self.job.config, self.net
        net.train()
        order = torch.randperm(len(self.y_train), generator=self.generator).to(job.device)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"{job.classifier.name} epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=None,  # a terminal only: no carriage returns in logs
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            inputs = batch_inputs(self.x_train[idx], config.augment, self.generator)
            targets = self.y_train[idx]
            logits = net(inputs)
            loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            seen += len(targets)
            loss_sum += loss.item() * len(targets)
            correct += int((logits.argmax(-1) == targets).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_loss, val_acc, _ = evaluate(net, self.x_val, self.y_val)
        return {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": self.scheduler.get_last_lr()[0],
            "elapsed_seconds": round(time.perf_counter() - self.started, 2),
        }

    def save(self, epoch: int) -> None:
        checkpoints.save(
            self.job.checkpoint_path,
            {
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "train_config": dataclasses.asdict(self.job.config),
                "model_config": dataclasses.asdict(self.job.model_config),
                "epoch": epoch,
                "wall_seconds": time.perf_counter() - self.started,
            },
        )


def run(classifier: DigitClassifier, argv: list[str] | None = None) -> Path:
    job = prepare(classifier, parse_args(classifier, argv))
    trainer = Trainer(job)
    trainer.train()
    return test_and_export(job, trainer)


def test_and_export(job: Job, trainer: Trainer) -> Path:
    """Test figures of the trained network, its curves, then the graph and manifest into the repository."""
    wall = time.perf_counter() - trainer.started
    x_test, y_test = job.tensors(job.test)
    test_loss, test_acc, test_pred = evaluate(trainer.net, x_test, y_test)
    name = job.classifier.name
    plot = plot_curves(
        trainer.log.records,
        job.run_dir / "curves.png",
        x="epoch",
        panels={"loss": ["train_loss", "val_loss"], "accuracy": ["train_accuracy", "val_accuracy"]},
        title=f"{name}: test accuracy {test_acc:.4f}",
    )
    print(f"{name}: test accuracy {test_acc:.4%} (loss {test_loss:.4f}) after {wall:.0f} s of training")
    version_dir = export_model(
        job,
        trainer.net.cpu(),
        test_acc=test_acc,
        test_loss=test_loss,
        torch_pred=test_pred,
        val_acc=trainer.log.records[-1]["val_accuracy"],
        wall=wall,
        side_files=[trainer.log.path, plot],
    )
    print(f"exported {job.args.name} to {version_dir}")
    return version_dir


def export_model(
    job: Job,
    net: nn.Module,
    *,
    test_acc: float,
    test_loss: float,
    torch_pred: np.ndarray,
    val_acc: float,
    wall: float,
    side_files: list[Path],
) -> Path:
    args, classifier, test = job.args, job.classifier, job.test
    graph = PixelsToProbabilities(net).eval()
    side = test.images.shape[1]
    real = torch.from_numpy(test.images[:64]).float() / 255.0

    def parity_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        # Fresh shapes each trial, half random noise and half real digits.
        n = int(torch.randint(1, 40, (1,), generator=g))
        noise = torch.rand(n, side, side, generator=g)
        return (torch.cat([noise, real[:n]]),)

    spec = export.GraphExport(
        module=graph,
        example_inputs=(real[:2],),
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)},),
        parity_inputs=parity_inputs,
        atol=1e-5,
        rtol=1e-4,
    )
    staged = export.staging_dir(args.repository, args.name)
    try:
        onnx_path = staged / "model.onnx"
        parity, signature = export.export_graph(spec, onnx_path, seed=args.seed)
        onnx_pred = onnx_predictions(onnx_path, test.images)
        for path in side_files:
            shutil.copy2(path, staged / path.name)
        manifest: dict[str, Any] = {
            "family": "classifier",
            "architecture": classifier.arch,
            "graphs": {"model": export.graph_entry(onnx_path, signature, parity)},
            "labels": mnist.LABELS,
            "preprocessing": {
                "input": "image",
                "height": side,
                "width": side,
                "channels": 1,
                "pixel_scale": 1 / 255,
                "background": "black",
                "resize": "bilinear",
                "normalization": {"mean": MEAN, "std": STD, "in_graph": True},
            },
            "training": {
                "model_config": dataclasses.asdict(job.model_config),
                "train_config": dataclasses.asdict(job.config),
                "seed": args.seed,
                "device": str(job.device),
                "wall_time_seconds": round(wall, 1),
                "dry_run": bool(args.dry_run),
                "train_size": len(job.train.labels),
                "validation_size": len(job.val.labels),
            },
            "dataset": mnist.dataset_fingerprint(args.data_dir),
            "evaluation": {
                "test_accuracy": test_acc,
                "test_loss": test_loss,
                "validation_accuracy": val_acc,
                "test_size": len(test.labels),
                "onnx_test_accuracy": float((onnx_pred == test.labels).mean()),
                "onnx_torch_agreement": float((onnx_pred == torch_pred).mean()),
                "test_predictions_sha256": predictions_digest(onnx_pred),
            },
            "export": export.export_info(),
            "files": {"metrics": "metrics.jsonl", "curves": "curves.png"},
        }
        return export.publish_version(args.repository, args.name, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
