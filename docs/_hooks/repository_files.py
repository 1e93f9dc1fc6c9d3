"""MkDocs hook: files that live beside the code they describe, published in the site as they are.

`deploy/*/README.md` stay next to their scripts and `benchmarks/RESULTS.md` is what `make bench`
writes; the site shows them at the paths below (their relative links and images keep working where
the site path mirrors the repository's), and strict mode checks their links like any page's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
# Repository path -> path in the site.
MIRRORED = {
    "benchmarks/RESULTS.md": "benchmarks/results.md",
    "benchmarks/classifier_throughput.png": "benchmarks/classifier_throughput.png",
    "deploy/gpu/README.md": "deployment/gpu.md",
    "deploy/images/README.md": "deployment/images.md",
    "deploy/k8s/README.md": "deployment/k8s-files.md",
}


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    for source, target in MIRRORED.items():
        files.append(File.generated(config, target, abs_src_path=str(ROOT / source)))
    return files
