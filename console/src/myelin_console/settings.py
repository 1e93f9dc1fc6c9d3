"""The console's one typed settings object: every field from a `MYELIN_CONSOLE_<FIELD>` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

FAMILIES = ("classifier", "translator", "generator", "embedder")
Family = Literal["classifier", "translator", "generator", "embedder"]


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MYELIN_CONSOLE_", extra="forbid")

    host: str = "127.0.0.1"
    # 0 picks a free port.
    port: int = Field(8080, ge=0, le=65535)
    # Each family service's HTTP base URL (its http_port: http://classifier:51051); a family
    # without one is shown as not deployed.
    classifier_url: AnyHttpUrl | None = None
    translator_url: AnyHttpUrl | None = None
    generator_url: AnyHttpUrl | None = None
    embedder_url: AnyHttpUrl | None = None
    # Sent to the services as `authorization: Bearer <token>`; never sent to the browser.
    auth_token: SecretStr | None = None
    auth_token_file: Path | None = None
    # The CA that signed the services' HTTPS certificates (default: the system's).
    ca_file: Path | None = None
    # Request bodies the console forwards (a 28x28 image is 1 KB, an upload a few hundred).
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    # How long a forwarded call may take before the console gives up (a stream: between events).
    timeout_s: float = Field(60.0, gt=0)
    # The model repository, read-only, for the training curves (metrics.jsonl beside each manifest).
    repository: Path | None = None
    # The services' /metrics are scraped this often, and kept this long, for the live figures.
    scrape_interval_s: float = Field(5.0, gt=0)
    live_window_s: float = Field(300.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def url(self, family: str) -> str | None:
        value: AnyHttpUrl | None = getattr(self, f"{family}_url")
        return None if value is None else str(value).rstrip("/")

    def token(self) -> str | None:
        if self.auth_token is not None:
            return self.auth_token.get_secret_value()
        if self.auth_token_file is not None:
            return self.auth_token_file.read_text().strip() or None
        return None
