"""The training jobs' settings: defaults for flags, read from MYELIN_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """`MYELIN_DATA_DIR` and `MYELIN_REPOSITORY` give the defaults of --data-dir and --repository."""

    model_config = SettingsConfigDict(env_prefix="MYELIN_", extra="ignore")

    data_dir: Path | None = None
    repository: Path | None = None
    device: str = "auto"
