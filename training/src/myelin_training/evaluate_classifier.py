"""myelin-eval classifier: send the MNIST test set through a running service and compare.

The manifest records what the exported graph predicts for the test images (accuracy and a SHA-256
of the predicted labels). Served predictions must be the same, image for image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from myelin_client import Client, default_target
from myelin_training.data import mnist
from myelin_training.digits import predictions_digest
from myelin_training.settings import TrainingSettings


def evaluate(
    client: Client, model: str, images: np.ndarray, labels: np.ndarray, *, batch: int = 256
) -> dict[str, object]:
    """Classify `images` (uint8, (N, 28, 28)) through the service; accuracy, digest, throughput."""
    info = client.get_model(model)
    size = int(info.evaluation.get("test_size", len(labels)))
    images, labels = images[:size], labels[:size]
    predictions = np.empty(len(labels), dtype=np.uint8)
    started = time.perf_counter()
    version = 0
    for i in range(0, len(labels), batch):
        result = client.classify(images[i : i + batch], model=model, version=info.version, timeout=60)
        predictions[i : i + batch] = [int(c.label) for c in result]
        version = result.version
    seconds = time.perf_counter() - started
    manifest = json.loads(info.manifest_json)["evaluation"]
    digest = predictions_digest(predictions)
    return {
        "model": model,
        "version": version,
        "images": len(labels),
        "served_accuracy": float((predictions == labels).mean()),
        "manifest_onnx_accuracy": manifest["onnx_test_accuracy"],
        "manifest_torch_accuracy": manifest["test_accuracy"],
        "same_predictions": digest == manifest["test_predictions_sha256"],
        "images_per_second": len(labels) / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-eval classifier", description=__doc__)
    parser.add_argument("--target", default=default_target("classifier"), help="HOST:PORT (default: %(default)s)")
    parser.add_argument("--model", action="append", help="model name (repeatable; default: every classifier served)")
    parser.add_argument("--data-dir", type=Path, default=TrainingSettings().data_dir)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("--data-dir is required (or set MYELIN_DATA_DIR)")
    test = mnist.load_split(args.data_dir, "test")
    with Client(args.target, timeout=60) as client:
        client.wait_ready()
        models = args.model or [m.name for m in client.list_models()]
        reports = [evaluate(client, name, test.images, test.labels) for name in models]
    for r in reports:
        verdict = (
            "same predictions as the manifest" if r["same_predictions"] else "PREDICTIONS DIFFER from the manifest"
        )
        print(
            f"{r['model']} v{r['version']}: served accuracy {r['served_accuracy']:.4%} on {r['images']} test images "
            f"(manifest: onnx {r['manifest_onnx_accuracy']:.4%}, torch {r['manifest_torch_accuracy']:.4%}); "
            f"{verdict}; {r['images_per_second']:.0f} images/s"
        )
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    if not all(r["same_predictions"] for r in reports):
        sys.exit(1)
