"""One training step of the translator in float32 vs bfloat16 autocast, on this CPU.

    .venv/bin/python benchmarks/translator/bf16_step.py [--config cpu] [--rows 100] [--length 20] [--steps 20]

The same model (the recipe's shape, 8,000 subwords), the same random batch of `rows` sentence pairs
of `length` tokens a side (100 x 20: the cpu recipe's 2,000-token budget), the same loss as the
trainer (`sequence_loss`), backward, gradient clipping and an Adam step. Prints the median
milliseconds per step of each mode and their ratio. Run it alone (under the CPU lock): it times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from myelin_training.translator.config import RECIPES
from myelin_training.translator.model import Translator
from myelin_training.translator.train import sequence_loss


def step_times(config_name: str, rows: int, length: int, steps: int, *, bf16: bool) -> list[float]:
    recipe = RECIPES[config_name]
    torch.manual_seed(0)
    model = Translator(recipe.model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    vocab = recipe.model.vocab_size
    source = torch.randint(4, vocab, (rows, length))
    batch = (source, torch.ones_like(source, dtype=torch.bool), torch.randint(4, vocab, (rows, length)), source.clone())
    times = []
    for i in range(steps + 3):  # the first three warm up
        started = time.perf_counter()
        loss, _ = sequence_loss(model, batch, torch.device("cpu"), smoothing=0.1, bf16=bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cpu", choices=[r for r in RECIPES if r != "dry"])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"translator {args.config}: {args.rows} x {args.length} tokens a side, {torch.get_num_threads()} threads")
    medians = {}
    for mode, bf16 in (("float32", False), ("bf16 autocast", True)):
        medians[mode] = statistics.median(step_times(args.config, args.rows, args.length, args.steps, bf16=bf16))
        print(f"{mode:>14}: {1000 * medians[mode]:.0f} ms per step (median of {args.steps})")
    print(f"bf16 autocast is {medians['float32'] / medians['bf16 autocast']:.2f}x float32's speed per step")


if __name__ == "__main__":
    main()
