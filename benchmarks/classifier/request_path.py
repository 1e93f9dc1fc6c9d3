"""The classify request -> batch path alone: the service's pixels-into-batch code against the
convert-then-concatenate path it replaced, in one process, on the same requests.

    .venv/bin/python benchmarks/classifier/request_path.py [--sides 28 256] [--repeats 15]

For each case (requests of one raw image, uint8 or float32, of 28x28 (MNIST) or larger, a request
alone or eight sharing a batch) it times everything between the request's bytes and the batch
onnxruntime gets: checking, converting, stacking, assembling. No gRPC, no graph. Both paths run
interleaved, --repeats times each; it prints microseconds per request, the fastest run (the one
least disturbed by other load, as timeit advises) and the median, and after/before of the fastest.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable

import numpy as np

from myelin_serving.batching import assemble
from myelin_serving.classifier.images import PixelRows, RawPixels, raw_pixels

Requests = list[list[RawPixels]]


def before(requests: Requests, side: int) -> np.ndarray:
    """The replaced path: per image uint8 -> float32, / 255, into the request's array; then the
    batcher concatenated the requests' arrays (or used a lone request's array as it was)."""
    arrays = []
    for images in requests:
        batch = np.empty((len(images), side, side), dtype=np.float32)
        for i, raw in enumerate(images):
            pixels = raw_pixels(raw, side, side, i)  # the same checks, then the old conversion
            batch[i] = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels
        arrays.append(batch)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def after(requests: Requests, side: int) -> np.ndarray:
    """The service's path: checked views in PixelRows, written once into the assembled batch."""
    return assemble(
        [PixelRows([raw_pixels(raw, side, side, i) for i, raw in enumerate(images)], side, side) for images in requests]
    )


def case(dtype: str, side: int, sharing: int) -> Requests:
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        data = [rng.integers(0, 256, (side, side), dtype=np.uint8).tobytes() for _ in range(sharing)]
    else:
        data = [rng.random((side, side), dtype=np.float32).tobytes() for _ in range(sharing)]
    return [[RawPixels(side, side, dtype, d)] for d in data]


def per_request_us(path: Callable[[Requests, int], np.ndarray], requests: Requests, side: int, seconds: float) -> float:
    number = max(1, round(seconds / max(timeit.timeit(lambda: path(requests, side), number=3) / 3, 1e-7)))
    return timeit.timeit(lambda: path(requests, side), number=number) / number / len(requests) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[28, 256], help="image sides to try")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.05, help="per timed run")
    args = parser.parse_args(argv)
    print(f"{'case (us per request)':34} {'before: min median':>19} {'after: min median':>19} {'after/before':>12}")
    for side in args.sides:
        for dtype in ("uint8", "float32"):
            for sharing in (1, 8):
                requests = case(dtype, side, sharing)
                np.testing.assert_array_equal(before(requests, side), after(requests, side))  # the same bits
                old, new = [], []
                for _ in range(args.repeats):  # interleaved: both paths see the same background load
                    old.append(per_request_us(before, requests, side, args.seconds))
                    new.append(per_request_us(after, requests, side, args.seconds))
                label = f"{side}x{side} {dtype}, {sharing} per batch"
                print(
                    f"{label:34} {min(old):9.2f} {statistics.median(old):9.2f} "
                    f"{min(new):9.2f} {statistics.median(new):9.2f} {min(new) / min(old):12.2f}"
                )


if __name__ == "__main__":
    main()
