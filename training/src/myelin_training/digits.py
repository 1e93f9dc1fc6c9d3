"""The training job both MNIST classifiers share: data, augmentation, loop, evaluation, export.

`mlp/train.py` and `cnn/train.py` each give a recipe (the network and its two configs); this module
does the rest, so the two models are trained, measured and exported the same way.

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
class DigitsRecipe:
    arch: str
    name: str
    model_config: Any  # the network's config dataclass; it travels into the manifest
    build: Callable[[Any], nn.Module]
    full: TrainConfig
    quick: TrainConfig


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


def parse_args(recipe: DigitsRecipe, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"myelin-train {recipe.arch}", description=f"Train and export {recipe.name}.")
    add_common_arguments(parser, default_name=recipe.name)
    parser.add_argument(
        "--config", choices=["full", "quick"], default="full", help="full: the accuracy targets; quick: minutes"
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


def run(recipe: DigitsRecipe, argv: list[str] | None = None) -> Path:
    args = parse_args(recipe, argv)
    config = recipe.full if args.config == "full" else recipe.quick
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_augment:
        config = dataclasses.replace(config, augment=False)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    run_dir = args.run_dir or Path("runs") / args.name
    checkpoint_path = run_dir / checkpoints.CHECKPOINT
    resume = checkpoints.load(checkpoint_path) if args.resume else None

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

    def tensors(split: mnist.MnistSplit) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(split.images).to(device), torch.from_numpy(split.labels).to(device)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = tensors(train), tensors(val), tensors(test)
    net = recipe.build(recipe.model_config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(args.seed)
    log = MetricsLog(run_dir / "metrics.jsonl", append=resume is not None)
    start_epoch, wall_before = 1, 0.0
    if resume is not None:
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        start_epoch, wall_before = resume["epoch"] + 1, resume["wall_seconds"]
        if resume["train_config"]["epochs"] == config.epochs:
            scheduler.load_state_dict(resume["scheduler"])
        else:  # a new total: the one cycle stretched to it, from the step the run had reached
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=config.lr,
                total_steps=max(config.epochs, resume["epoch"]) * steps_per_epoch,
                pct_start=0.15,
                last_epoch=resume["epoch"] * steps_per_epoch - 1,
            )
        log.keep_until("epoch", resume["epoch"])
        print(f"resumed from {checkpoint_path} after epoch {resume['epoch']} of {config.epochs}")
    started = time.perf_counter() - wall_before
    for epoch in range(start_epoch, config.epochs + 1):
        net.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{recipe.name} epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=None,  # a terminal only: no carriage returns in logs
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            inputs, targets = batch_inputs(x_train[idx], config.augment, generator), y_train[idx]
            logits = net(inputs)
            loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(targets)
            loss_sum += loss.item() * len(targets)
            correct += int((logits.argmax(-1) == targets).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_loss, val_acc, _ = evaluate(net, x_val, y_val)
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_seconds": round(time.perf_counter() - started, 2),
        }
        log.write(record)
        checkpoints.save(
            checkpoint_path,
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "train_config": dataclasses.asdict(config),
                "model_config": dataclasses.asdict(recipe.model_config),
                "epoch": epoch,
                "wall_seconds": time.perf_counter() - started,
            },
        )
        tqdm.write(
            f"epoch {epoch}: train loss {record['train_loss']:.4f} val loss {val_loss:.4f} val acc {val_acc:.4f}"
        )
    wall = time.perf_counter() - started
    test_loss, test_acc, test_pred = evaluate(net, x_test, y_test)
    plot = plot_curves(
        log.records,
        run_dir / "curves.png",
        x="epoch",
        panels={"loss": ["train_loss", "val_loss"], "accuracy": ["train_accuracy", "val_accuracy"]},
        title=f"{recipe.name}: test accuracy {test_acc:.4f}",
    )
    print(f"{recipe.name}: test accuracy {test_acc:.4%} (loss {test_loss:.4f}) after {wall:.0f} s of training")
    version_dir = export_model(
        recipe,
        net.cpu(),
        args,
        config,
        test,
        test_acc=test_acc,
        test_loss=test_loss,
        torch_pred=test_pred,
        val_acc=log.records[-1]["val_accuracy"],
        wall=wall,
        device=str(device),
        sizes=(len(y_train), len(y_val)),
        side_files=[log.path, plot],
    )
    print(f"exported {args.name} to {version_dir}")
    return version_dir


def export_model(
    recipe: DigitsRecipe,
    net: nn.Module,
    args: argparse.Namespace,
    config: TrainConfig,
    test: mnist.MnistSplit,
    *,
    test_acc: float,
    test_loss: float,
    torch_pred: np.ndarray,
    val_acc: float,
    wall: float,
    device: str,
    sizes: tuple[int, int],
    side_files: list[Path],
) -> Path:
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
            "architecture": recipe.arch,
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
                "model_config": dataclasses.asdict(recipe.model_config),
                "train_config": dataclasses.asdict(config),
                "seed": args.seed,
                "device": device,
                "wall_time_seconds": round(wall, 1),
                "dry_run": bool(args.dry_run),
                "train_size": sizes[0],
                "validation_size": sizes[1],
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
