"""Runs inside gensim's virtualenv: train gensim's Word2Vec on a tokenised corpus, write vectors and timing.

python gensim_train.py CORPUS OUT_DIR --sg 1 --dim 100 --window 5 --negative 5 --sample 1e-3
    --min-count 5 --epochs 5 --alpha 0.025 --workers 2 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gensim.models import Word2Vec
from gensim.models.word2vec import FAST_VERSION, LineSentence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    for flag, kind in [
        ("sg", int),
        ("dim", int),
        ("window", int),
        ("negative", int),
        ("sample", float),
        ("min-count", int),
        ("epochs", int),
        ("alpha", float),
        ("workers", int),
        ("seed", int),
        ("hs", int),
    ]:
        parser.add_argument(f"--{flag}", type=kind, required=flag != "hs", default=0)
    args = parser.parse_args()
    assert FAST_VERSION >= 0, "gensim's compiled routines are missing: the timing would be meaningless"
    sentences = LineSentence(str(args.corpus))  # one sentence per line, words split on spaces
    model = Word2Vec(
        sg=args.sg,
        vector_size=args.dim,
        window=args.window,
        negative=0 if args.hs else args.negative,
        hs=args.hs,
        sample=args.sample,
        min_count=args.min_count,
        epochs=args.epochs,
        alpha=args.alpha,
        min_alpha=args.alpha * 1e-4,
        workers=args.workers,
        seed=args.seed,
    )
    model.build_vocab(sentences)
    started, cpu_started = time.perf_counter(), time.process_time()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    args.out.mkdir(parents=True, exist_ok=True)
    model.wv.save_word2vec_format(str(args.out / "vectors.txt"))
    report = {
        "train_seconds": seconds,
        "cpu_seconds": cpu_seconds,  # every thread of the process
        "corpus_words": model.corpus_total_words,
        "words_per_second": model.corpus_total_words * args.epochs / seconds,
        "vocab_size": len(model.wv),
    }
    (args.out / "timing.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
