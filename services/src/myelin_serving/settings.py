"""One typed settings object per process. Nothing else in the services reads the environment.

Every field comes from a `MYELIN_<FIELD>` variable (nested: `MYELIN_BATCHING__MAX_BATCH_SIZE`),
and the command line overrides what it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Family = Literal["classifier", "translator", "generator", "embedder"]
# The HTTP port, unless set, is the gRPC port + this (51051 for the classifier's 50051).
HTTP_PORT_OFFSET = 1000


def parse_device(device: str) -> tuple[str, int]:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> (kind, device index)."""
    kind, colon, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (colon and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N a device index), not {device!r}")
    return kind, int(index or 0)


class BatchingSettings(BaseModel):
    """Defaults for every model's dynamic batcher; a manifest's `serving` section overrides them."""

    enabled: bool = True
    # Rows (images, sentences...) one onnxruntime call may take.
    max_batch_size: int = Field(64, ge=1, le=4096)
    # How long the oldest queued request may wait for others to join its batch.
    max_queue_delay_us: int = Field(1000, ge=0, le=1_000_000)
    # Wait only when recent arrivals say another request should come inside the delay (a lone
    # caller then never pays it); false always waits the full delay for company, as Triton does.
    adaptive_delay: bool = True
    # Requests waiting at once; more are refused with RESOURCE_EXHAUSTED.
    max_queue_size: int = Field(1024, ge=1)
    # A request still queued after this long is dropped with DEADLINE_EXCEEDED.
    queue_timeout_s: float = Field(30.0, gt=0)
    # onnxruntime calls in flight at once per model (Triton's instance count).
    instances: int = Field(1, ge=1, le=16)


class GenerationSettings(BaseModel):
    """Limits of the generator family's decoding loop (one loop per model version)."""

    # Sequences one model version decodes at once (waiting for their prompt or generating); more
    # are refused with RESOURCE_EXHAUSTED.
    max_sequences: int = Field(64, ge=1, le=1024)
    # Prompt tokens one request may bring (the model's context caps it further).
    max_prompt_tokens: int = Field(1024, ge=1)
    # Prompt + generated tokens one sequence may reach, for models without a fixed context (GRU).
    max_context_tokens: int = Field(4096, ge=2)
    # max_new_tokens when a request leaves it at 0 (capped by what is left of the context).
    default_max_new_tokens: int = Field(128, ge=1)
    # Stop sequences per request, and characters per stop sequence.
    max_stop_sequences: int = Field(8, ge=0)
    max_stop_length: int = Field(64, ge=1)
    # When a version is unloaded, how long its sequences may run on before being cancelled.
    drain_timeout_s: float = Field(30.0, ge=0)
    # A stream's tokens go out at most this often (milliseconds); tokens produced meanwhile travel
    # together in one message. First and last tokens go out at once. 0: after every step.
    stream_interval_ms: float = Field(10.0, ge=0, le=1000)
    # The step graph's onnxruntime threads busy-wait between the nodes of a step instead of
    # sleeping (whatever intra_op_spinning says for the other families): decoding has its own
    # thread, and on 2 cores a step of one row took about half the time (README, generator).
    step_spinning: bool = True


class TranslatorSettings(BaseModel):
    """Limits of the translator service (`MYELIN_TRANSLATOR__*`); requests beyond them are refused."""

    # Hypotheses per sentence a request may ask for (beam_size).
    max_beam_size: int = Field(8, ge=1, le=64)
    # beam_size when a request leaves it unset (1 is greedy).
    default_beam_size: int = Field(4, ge=1, le=64)
    # Source subword tokens per sentence; 0 takes the model's own limit (its manifest), else the smaller.
    max_source_tokens: int = Field(0, ge=0)
    # Hypotheses (sentences x beams, every request together) in one decoder step: the concurrent work.
    max_active_rows: int = Field(256, ge=1, le=8192)
    # Sentences waiting for room in the decoder batch; more are refused with RESOURCE_EXHAUSTED.
    max_pending_sentences: int = Field(4096, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TranslatorSettings:
        if self.default_beam_size > self.max_beam_size:
            raise ValueError("translator.default_beam_size cannot exceed translator.max_beam_size")
        if self.max_beam_size > self.max_active_rows:
            raise ValueError("translator.max_beam_size cannot exceed translator.max_active_rows")
        return self


class Settings(BaseSettings):
    # validate_by_name: Settings(http_port=...) as well as the MYELIN_* names of aliased fields.
    model_config = SettingsConfigDict(
        env_prefix="MYELIN_", env_nested_delimiter="__", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    service: Family = "classifier"
    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    # Unset: the family's default port (its proto's `default_port`: classifier 50051, translator
    # 50052, generator 50053, embedder 50054). 0 picks a free port; the log (and --port-file) says which.
    port: int | None = Field(None, ge=0, le=65535)
    # The HTTP port: the Open Inference Protocol over REST, the family's OpenAI-compatible routes and
    # Prometheus /metrics. Unset: the gRPC port + 1000 (51051 for the classifier), or a free port when
    # the gRPC port is 0; 0 picks a free port, -1 turns HTTP off. MYELIN_METRICS_PORT (and
    # --metrics-port) still work: it was the metrics server's.
    http_port: int | None = Field(
        None, ge=-1, le=65535, validation_alias=AliasChoices("MYELIN_HTTP_PORT", "MYELIN_METRICS_PORT")
    )
    # Address of the HTTP port; default: `host`. MYELIN_METRICS_HOST is the older name.
    http_host: str = Field(
        default_factory=lambda data: str(data["host"]),
        validation_alias=AliasChoices("MYELIN_HTTP_HOST", "MYELIN_METRICS_HOST"),
    )

    # Largest request or response: gRPC messages, HTTP request bodies (refused with 413 before reading).
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Requests without a deadline get this one.
    default_deadline_s: float = Field(30.0, gt=0)
    # On SIGTERM: NOT_SERVING at once, then this long for requests in flight to finish.
    grace_period_s: float = Field(10.0, ge=0)
    # The first part of the grace period: NOT_SERVING but still taking calls, so that clients which
    # watch health (the SDK on a replica target) move their calls to other replicas before the
    # server stops taking them (gRPC cancels a call that arrives once it has stopped: CANCELLED).
    drain_delay_s: float = Field(1.0, ge=0)
    # Close connections after this long so clients re-resolve and spread over new replicas (0: never).
    max_connection_age_s: float = Field(0, ge=0)

    # auto (CUDA when onnxruntime can use it, else CPU), cpu, cuda, or cuda:N for the N-th GPU.
    device: str = "auto"
    # IO binding (onnxruntime IOBinding + OrtValue): caches, states and batches stay on the device
    # between runs and only what the host reads is copied back. auto: on for CUDA, off for the CPU
    # provider, where numpy arrays are already the device's memory and the binding costs time.
    io_binding: Literal["auto", "on", "off"] = "auto"
    # MiB each onnxruntime session's CUDA arena may hold (gpu_mem_limit); 0: no limit.
    device_memory_limit_mb: int = Field(0, ge=0)
    # onnxruntime intra-op threads per session; 0 lets onnxruntime choose (one per core).
    intra_op_threads: int = Field(0, ge=0)
    # Let onnxruntime's threads busy-wait between runs: lower latency on dedicated cores, but on
    # shared ones it takes the CPU that gRPC and the batcher need.
    intra_op_spinning: bool = False
    # Python's GIL switch interval for the serving process (sys.setswitchinterval). The onnxruntime
    # worker thread needs the GIL for a moment before and after every run; at Python's default
    # (5000 us) it waits for the event loop to give it up, so the model sits idle between batches
    # (measured: 2.5 ms per batch at 5000 us, 1 ms at 500 us, on the CNN at concurrency 32).
    gil_switch_interval_us: int = Field(500, ge=50, le=100_000)
    # The event loop of `myelin-serve`: uvloop (libuv) spends less CPU per call than asyncio's own
    # loop (measured: about 13% less server CPU per request, +7-12% requests/s, CNN at concurrency 32).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    batching: BatchingSettings = BatchingSettings()
    generation: GenerationSettings = GenerationSettings()
    # Items (images, sentences...) one request may carry; for KServe ModelInfer, rows of any graph.
    max_request_batch: int = Field(256, ge=1)
    # Numbers (tensor elements) of all the inputs of one KServe ModelInfer together, counted from the
    # declared shapes before anything is decoded: typed contents carry a zero in one byte, so the
    # message size alone does not bound the decoded arrays (4 Mi: 32 MiB as INT64).
    max_request_elements: int = Field(4 * 1024 * 1024, ge=1)
    translator: TranslatorSettings = TranslatorSettings()
    # Rescan the repository this often to load new versions and unload removed ones (0: never).
    reload_interval_s: float = Field(2.0, ge=0)
    # Serve only the newest N versions of each model (0: all versions present).
    version_policy_latest: int = Field(0, ge=0)

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # With a client CA, callers must present a certificate it signed (mutual TLS).
    tls_client_ca_file: Path | None = None
    # Bearer tokens accepted in `authorization` metadata (gRPC) or header (HTTP); empty turns
    # authentication off.
    auth_tokens: Annotated[list[str], NoDecode] = []
    auth_tokens_file: Path | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Log every request (method, status, duration; never metadata or payloads).
    access_log: bool = False

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
