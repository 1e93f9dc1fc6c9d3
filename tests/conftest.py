"""Session fixtures: the datasets, and small models trained and exported in this test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import LONG_GENERATION, REPO_ROOT, ServerThread, settings_for


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("MYELIN_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "mnist").is_dir():
        pytest.fail(f"datasets not found at {path}: set MYELIN_DATA_DIR (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def classifier_repository(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """mnist-mlp and mnist-cnn trained for a few steps (--dry-run) and exported: the real pipeline, small."""
    from myelin_training.cnn.train import main as train_cnn
    from myelin_training.mlp.train import main as train_mlp

    repository = tmp_path_factory.mktemp("classifier-repository")
    runs = tmp_path_factory.mktemp("runs")
    for train, name in ((train_mlp, "mnist-mlp"), (train_cnn, "mnist-cnn")):
        train(
            [
                "--dry-run",
                "--publish",
                "--data-dir",
                str(data_dir),
                "--repository",
                str(repository),
                "--run-dir",
                str(runs / name),
            ]
        )
    return repository


@pytest.fixture
def fresh_repository(tmp_path: Path, classifier_repository: Path) -> Path:
    """A private copy of the classifier repository that a test may change."""
    copy = tmp_path / "repository"
    shutil.copytree(classifier_repository, copy)
    return copy


@pytest.fixture(scope="module")
def classifier_server(classifier_repository: Path) -> Iterator[ServerThread]:
    """One classifier service for a test module: loopback, port 0, batching on."""
    with ServerThread(settings_for(classifier_repository)) as server:
        yield server


@pytest.fixture(scope="session")
def generator_training(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """generator-gpt-shakespeare and generator-gru-shakespeare, trained for a few steps (--dry-run):
    (repository, runs), the run directories being runs/gpt and runs/gru."""
    from myelin_training.generator.train import main as train_generator

    repository = tmp_path_factory.mktemp("generator-repository")
    runs = tmp_path_factory.mktemp("generator-runs")
    for arch in ("gpt", "gru"):
        train_generator(
            [
                "--arch",
                arch,
                "--dry-run",
                "--publish",
                "--data-dir",
                str(data_dir),
                "--repository",
                str(repository),
                "--run-dir",
                str(runs / arch),
            ]
        )
    return repository, runs


@pytest.fixture(scope="session")
def generator_repository(generator_training: tuple[Path, Path]) -> Path:
    return generator_training[0]


@pytest.fixture(scope="session")
def translator_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """translator-tatoeba trained for a few steps (--dry-run) and exported: (repository, run dir)."""
    from myelin_training.translator.train import main as train_translator

    repository = tmp_path_factory.mktemp("translator-repository")
    run_dir = tmp_path_factory.mktemp("translator-run")
    train_translator(
        [
            "--dry-run",
            "--publish",
            "--data-dir",
            str(data_dir),
            "--repository",
            str(repository),
            "--run-dir",
            str(run_dir),
        ]
    )
    return repository, run_dir


@pytest.fixture(scope="session")
def translator_repository(translator_run: tuple[Path, Path]) -> Path:
    return translator_run[0]


@pytest.fixture(scope="module")
def translator_server(translator_repository: Path) -> Iterator[ServerThread]:
    """One translator service for a test module: loopback, port 0, metrics on the test's registry."""
    with ServerThread(settings_for(translator_repository, service="translator")) as server:
        yield server


@pytest.fixture(scope="session")
def word2vec_repository(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """word2vec-skipgram (negative sampling) and word2vec-cbow-hs (hierarchical softmax), --dry-run:
    the first 20,000 words of the english preset, one epoch, exported with their evaluation."""
    from myelin_training.word2vec.train import main as train_word2vec

    repository = tmp_path_factory.mktemp("word2vec-repository")
    runs = tmp_path_factory.mktemp("word2vec-runs")
    for arch, loss in (("skipgram", "ns"), ("cbow", "hs")):
        train_word2vec(
            ["--dry-run", "--publish", "--corpus-preset", "english", "--data-dir", str(data_dir),
             "--repository", str(repository), "--run-dir", str(runs / arch), "--arch", arch, "--loss", loss]
        )  # fmt: skip
    return repository


@pytest.fixture(scope="module")
def generator_server(generator_repository: Path) -> Iterator[ServerThread]:
    """One generator service for a test module: loopback, port 0."""
    with ServerThread(settings_for(generator_repository, service="generator", generation=LONG_GENERATION)) as server:
        yield server


@pytest.fixture(scope="module")
def embedder_server(word2vec_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(word2vec_repository, service="embedder")) as server:
        yield server
