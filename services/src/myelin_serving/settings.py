"""One typed settings object per process. Nothing else in the services reads the environment.

Every field comes from a `MYELIN_<FIELD>` variable (nested: `MYELIN_BATCHING__MAX_BATCH_SIZE`),
and the command line overrides what it names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "MYELIN_"
# The HTTP port, unless set, is the gRPC port + this (51051 beside 50051).
HTTP_PORT_OFFSET = 1000


def parse_device(device: str) -> tuple[str, int]:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> (kind, device index)."""
    kind, colon, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (colon and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N a device index), not {device!r}")
    return kind, int(index or 0)


class BatchingSettings(BaseModel):
    """Defaults for every model's dynamic batcher; a manifest's `serving` section overrides them."""

    enabled: bool = Field(True, description="Dynamic batching on or off (off: one onnxruntime call per request).")
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="Rows (images, sentences...) one onnxruntime call may take."
    )
    max_queue_delay_us: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="How long the oldest queued request may wait for others to join its batch.",
    )
    adaptive_delay: bool = Field(
        True,
        description=(
            "Wait only when recent arrivals say another request should come inside the delay (a "
            "lone caller then never pays it); false always waits the full delay for company, as "
            "Triton does."
        ),
    )
    max_queue_size: int = Field(
        1024, ge=1, description="Requests waiting at once; more are refused with RESOURCE_EXHAUSTED."
    )
    queue_timeout_s: float = Field(
        30.0, gt=0, description="A request still queued after this long is dropped with DEADLINE_EXCEEDED."
    )
    instances: int = Field(
        1, ge=1, le=16, description="onnxruntime calls in flight at once per model (Triton's instance count)."
    )


class Settings(BaseSettings):
    # validate_by_name: Settings(http_port=...) as well as the MYELIN_* names of aliased fields.
    # extra="allow": the served family's own section (MYELIN_<KEY>__<FIELD>, Settings(<key>={...})),
    # which its Family validates (`section`).
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter="__", extra="allow", validate_by_name=True, validate_by_alias=True
    )

    service: str = Field(
        "",
        description="The family to serve: an installed one (`myelin_serving.families`; `myelin-serve NAME` sets it).",
    )
    repository: Path = Field(
        Path("model_repository"), description="The model repository: `<model>/<version>/` folders."
    )
    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "The gRPC port. Unset: the family's default (its proto's `default_port`, 50051 to 50054 for "
            "the shipped families). 0 picks a free port; the log (and --port-file) says which."
        ),
    )
    http_port: int | None = Field(
        None,
        ge=-1,
        le=65535,
        validation_alias=AliasChoices("MYELIN_HTTP_PORT", "MYELIN_METRICS_PORT"),
        description=(
            "The HTTP port: the Open Inference Protocol over REST, the family's OpenAI-compatible"
            " routes and Prometheus /metrics. Unset: the gRPC port + 1000 (51051 beside "
            "50051), or a free port when the gRPC port is 0; 0 picks a free port, -1 turns "
            "HTTP off. MYELIN_METRICS_PORT and --metrics-port are its older names."
        ),
    )
    http_host: str = Field(
        default_factory=lambda data: str(data["host"]),
        validation_alias=AliasChoices("MYELIN_HTTP_HOST", "MYELIN_METRICS_HOST"),
        description="Address of the HTTP port; default: `host`. MYELIN_METRICS_HOST is the older name.",
    )

    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request or response: gRPC messages, HTTP request bodies (refused with 413 before reading)."
        ),
    )
    default_deadline_s: float = Field(30.0, gt=0, description="Requests without a deadline get this one.")
    grace_period_s: float = Field(
        10.0, ge=0, description="On SIGTERM: NOT_SERVING at once, then this long for requests in flight to finish."
    )
    drain_delay_s: float = Field(
        1.0,
        ge=0,
        description=(
            "The first part of the grace period: NOT_SERVING but still taking calls, so that "
            "clients which watch health (the SDK on a replica target) move their calls to other "
            "replicas before the server stops taking them (gRPC cancels a call that arrives once "
            "it has stopped: CANCELLED)."
        ),
    )
    max_connection_age_s: float = Field(
        0,
        ge=0,
        description=(
            "Close connections after this long so clients re-resolve and spread over new replicas (0: never)."
        ),
    )

    device: str = Field(
        "auto",
        description="auto (CUDA when onnxruntime can use it, else CPU), cpu, cuda, or cuda:N for the N-th GPU.",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "IO binding (onnxruntime IOBinding + OrtValue): caches, states and batches stay on "
            "the device between runs and only what the host reads is copied back. auto: on for "
            "CUDA, off for the CPU provider, where numpy arrays are already the device's memory "
            "and the binding costs time."
        ),
    )
    device_memory_limit_mb: int = Field(
        0, ge=0, description="MiB each onnxruntime session's CUDA arena may hold (gpu_mem_limit); 0: no limit."
    )
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads per session; 0 lets onnxruntime choose (one per core)."
    )
    intra_op_spinning: bool = Field(
        False,
        description=(
            "Let onnxruntime's threads busy-wait between runs: lower latency on dedicated cores, "
            "but on shared ones it takes the CPU that gRPC and the batcher need."
        ),
    )
    gil_switch_interval_us: int = Field(
        100,
        ge=50,
        le=100_000,
        description=(
            "Python's GIL switch interval for the serving process (sys.setswitchinterval). The "
            "onnxruntime worker thread needs the GIL for a moment before and after every run, and "
            "waits up to this long for the event loop to give it up while the model sits idle "
            "(measured on the CNN at concurrency 32: 2.5 ms per batch at Python's default of "
            "5000 us; REST requests/s +13% and +15% at 100 us against 500 us in two paired runs, "
            "gRPC unchanged)."
        ),
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description=(
            "The event loop of `myelin-serve`: uvloop (libuv) spends less CPU per call than "
            "asyncio's own loop (measured: about 13% less server CPU per request, +7-12% "
            "requests/s, CNN at concurrency 32)."
        ),
    )
    batching: BatchingSettings = BatchingSettings()
    max_request_batch: int = Field(
        256,
        ge=1,
        description="Items (images, sentences...) one request may carry; for KServe ModelInfer, rows of any graph.",
    )
    max_request_elements: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description=(
            "Numbers (tensor elements) of all the inputs of one KServe ModelInfer together, "
            "counted from the declared shapes before anything is decoded: typed contents carry a "
            "zero in one byte, so the message size alone does not bound the decoded arrays (4 Mi:"
            " 32 MiB as INT64)."
        ),
    )
    reload_interval_s: float = Field(
        2.0,
        ge=0,
        description="Rescan the repository this often to load new versions and unload removed ones (0: never).",
    )
    version_policy_latest: int = Field(
        0, ge=0, description="Serve only the newest N versions of each model (0: all versions present)."
    )

    tls_cert_file: Path | None = Field(
        None,
        description=(
            "PEM certificate chain of the server: TLS on (with tls_key_file); its names must cover "
            "the address clients dial."
        ),
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="With a client CA, callers must present a certificate it signed (mutual TLS)."
    )
    auth_tokens: Annotated[list[str], NoDecode] = Field(
        [],
        description=(
            "Bearer tokens accepted in `authorization` metadata (gRPC) or header (HTTP), "
            "comma-separated in the variable; empty turns authentication off."
        ),
    )
    auth_tokens_file: Path | None = Field(
        None,
        description=(
            "A file of bearer tokens, one per line, read at start-up (unlike auth_tokens, not "
            "visible in the process environment)."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of the log lines written to stderr."
    )
    access_log: bool = Field(
        False, description="Log every request (method, status, duration; never metadata or payloads)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _Sections(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        parse_device(value)  # ValueError with the accepted forms
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        # MYELIN_AUTH_TOKENS="token-a,token-b"
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @model_validator(mode="after")
    def _check_family(self) -> Settings:
        """The service is an installed family, and its own section is valid (its model, validated now:
        a bad MYELIN_<KEY>__<FIELD> is an error at start, not at the first load)."""
        if self.service:
            from myelin_serving.families import load_family  # the families import this module

            family = load_family(self.service)
            if family.settings is not None and self.model_extra is not None:
                key = family.settings_section
                try:
                    self.model_extra[key] = family.read_settings(self)
                except ValidationError as exc:
                    raise ValueError(f"{key} (MYELIN_{key.upper()}__*): {exc}") from None
        return self

    def section(self, key: str) -> Any:
        """A family's own section (`Family.settings_key`): its model once validated, else what was given."""
        return (self.model_extra or {}).get(key)

    def with_ports(self, default_port: int) -> Settings:
        """These settings with both ports decided: `port` unset takes `default_port` (the family's),
        `http_port` unset follows the gRPC port (+ 1000, or 0 for 0)."""
        port = default_port if self.port is None else self.port
        http_port = self.http_port
        if http_port is None:
            http_port = port + HTTP_PORT_OFFSET if port else 0
            if http_port > 65535:
                raise ValueError(
                    f"the HTTP port defaults to the gRPC port + {HTTP_PORT_OFFSET} = {http_port}, "
                    "which is not a port: set --http-port (MYELIN_HTTP_PORT), -1 for none"
                )
        return self.model_copy(update={"port": port, "http_port": http_port})

    def tokens(self) -> frozenset[str]:
        """Accepted bearer tokens: the list plus one token per line of auth_tokens_file."""
        tokens = set(self.auth_tokens)
        if self.auth_tokens_file is not None:
            tokens.update(t.strip() for t in self.auth_tokens_file.read_text().splitlines() if t.strip())
        return frozenset(tokens)


class _Sections(PydanticBaseSettingsSource):
    """MYELIN_<KEY>__<FIELD> variables whose KEY is no field of Settings: a family's own section
    (nested like the rest: MYELIN_<KEY>__<FIELD>__<SUBFIELD>), kept for the family to validate."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # fields are env_settings' business; only sections come from here

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        sections: dict[str, Any] = {}
        for name, value in os.environ.items():
            key, nested, rest = name.upper().removeprefix(PREFIX).partition("__")
            if not name.upper().startswith(PREFIX) or not nested or not rest or key.lower() in known:
                continue
            target = sections.setdefault(key.lower(), {})
            *path, last = rest.lower().split("__")
            for part in path:
                target = target.setdefault(part, {})
            target[last] = value
        return sections
