"""The metric catalogue, on an injected CollectorRegistry.

Names follow Prometheus conventions (base units, `_total` counters, `_seconds` histograms); labels
are few and bounded: method, code, model, version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    # What a loaded version is and runs with: these series go as soon as it is unloaded, the rest of
    # its series once its calls have drained.
    LOADED_VERSION_SERIES = (
        "myelin_model_ready",
        "myelin_model_info",
        "myelin_batcher_max_batch_size",
        "myelin_batcher_max_queue_delay_seconds",
        "myelin_batcher_max_queue_size",
        "myelin_batcher_instances",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Requests, every gRPC method and HTTP route.
        self.requests = Counter(
            "myelin_requests",
            "Requests handled, by gRPC method or HTTP route and status code (gRPC's names)",
            ["method", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "myelin_request_duration_seconds",
            "Time from receiving a request to sending its last response",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge("myelin_requests_in_flight", "Requests being handled", ["method"], registry=registry)
        # Inference through the dynamic batcher.
        self.inference_duration = Histogram(
            "myelin_inference_duration_seconds",
            "onnxruntime time per execution (one batch)",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "myelin_batch_size", "Rows per onnxruntime execution", ["model"], buckets=BATCH_BUCKETS, registry=registry
        )
        self.queue_duration = Histogram(
            "myelin_queue_duration_seconds",
            "Time a request waited in the batcher's queue",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "myelin_queue_depth", "Requests waiting in the batcher's queue", ["model"], registry=registry
        )
        self.inferences = Counter(
            "myelin_inferences", "Rows inferred (a request of 8 images counts 8)", ["model"], registry=registry
        )
        self.executions = Counter("myelin_executions", "onnxruntime executions (batches)", ["model"], registry=registry)
        self.rejections = Counter(
            "myelin_batcher_rejections",
            "Requests the batcher refused or dropped: queue_full, deadline, queue_timeout",
            ["model", "code"],
            registry=registry,
        )
        # The batching settings in force, per loaded model version (what GetModel and ModelConfig show).
        self.batcher_max_batch_size = Gauge(
            "myelin_batcher_max_batch_size",
            "Rows one onnxruntime execution may take (1: batching off)",
            ["model", "version"],
            registry=registry,
        )
        self.batcher_max_queue_delay = Gauge(
            "myelin_batcher_max_queue_delay_seconds",
            "How long the oldest queued request may wait for others to join its batch",
            ["model", "version"],
            registry=registry,
        )
        self.batcher_max_queue_size = Gauge(
            "myelin_batcher_max_queue_size",
            "Requests that may wait at once; more are refused",
            ["model", "version"],
            registry=registry,
        )
        self.batcher_instances = Gauge(
            "myelin_batcher_instances",
            "onnxruntime executions in flight at once",
            ["model", "version"],
            registry=registry,
        )
        # Step loops of sequence models (translator): one decoder call per step for every request.
        self.decode_steps = Counter(
            "myelin_decode_steps",
            "Decoder-step executions (all requests in flight share each)",
            ["model"],
            registry=registry,
        )
        self.decode_step_rows = Histogram(
            "myelin_decode_step_rows",
            "Hypotheses (sentences x live beams) in one decoder step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.decode_step_requests = Histogram(
            "myelin_decode_step_requests",
            "Requests whose sentences share one decoder step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.decode_active_rows = Gauge(
            "myelin_decode_active_rows",
            "Hypotheses in the decoder batch after the last step",
            ["model"],
            registry=registry,
        )
        self.generated_tokens = Counter(
            "myelin_generated_tokens",
            "Tokens generated: the generator's sampled tokens, the translator's answer tokens (with end of sentence)",
            ["model"],
            registry=registry,
        )
        # Model lifecycle.
        self.model_load_duration = Histogram(
            "myelin_model_load_duration_seconds",
            "Time to load and warm up one model version",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.model_loads = Counter(
            "myelin_model_loads", "Model version loads, by result (ok, failed)", ["model", "code"], registry=registry
        )
        self.model_ready = Gauge(
            "myelin_model_ready",
            "1 for each model version ready to serve, 0 for a failed one",
            ["model", "version"],
            registry=registry,
        )
        self.model_info = Gauge(
            "myelin_model_info",
            "1 for each loaded model version; labels say its family and onnxruntime execution provider",
            ["model", "version", "family", "provider"],
            registry=registry,
        )
        # Text generation (the generator family's decoding loop).
        self.generator_ttft = Histogram(
            "myelin_generator_time_to_first_token_seconds",
            "Time from a sequence's arrival to its first generated token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generator_itl = Histogram(
            "myelin_generator_inter_token_latency_seconds",
            "Time between two consecutive tokens of one sequence",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generator_prompt_tokens = Counter(
            "myelin_generator_prompt_tokens", "Prompt tokens prefilled", ["model"], registry=registry
        )
        self.generator_active = Gauge(
            "myelin_generator_active_sequences",
            "Sequences admitted to the decoding loop and not finished (prefilling or decoding)",
            ["model"],
            registry=registry,
        )
        self.generator_step_batch = Histogram(
            "myelin_generator_step_batch_size",
            "Sequences decoded together in one step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.generator_step_duration = Histogram(
            "myelin_generator_step_duration_seconds",
            "onnxruntime time of one decoding step (all active sequences)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generator_sequences = Counter(
            "myelin_generator_sequences",
            "Sequences that left the decoding loop, by outcome: length, stop, cancelled, deadline, error, rejected",
            ["model", "outcome"],
            registry=registry,
        )
        self.server_info = Info("myelin_server", "Service family, version and execution provider", registry=registry)

    def forget(self, model: str, version: str | None = None, names: Iterable[str] = ()) -> None:
        """Drop the series of one `version` of `model`, or with no version every series of the model
        (its last version went): removed models and versions do not stay on /metrics. `names`
        limits it to those metric families."""
        wanted = set(names)
        for metric in vars(self).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            gone: set[tuple[str, ...]] = set()
            for family in metric.collect():
                if wanted and family.name not in wanted:
                    continue
                for sample in family.samples:
                    labels = {k: v for k, v in sample.labels.items() if k not in ("le", "quantile")}
                    if labels.get("model") != model or (version is not None and labels.get("version") != version):
                        continue
                    gone.add(tuple(labels.values()))  # label values, in the metric's label order
            for values in gone:
                with contextlib.suppress(KeyError):
                    metric.remove(*values)

    def for_method(self, method: str) -> MethodMetrics:
        return MethodMetrics(self, method)

    def for_batcher(self, model: str, version: str) -> BatcherMetrics:
        return BatcherMetrics(self, model, version)


class MethodMetrics:
    """One gRPC method's series, bound once: `labels()` costs a lock and a dict lookup per call."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self._metrics = metrics
        self.method = method
        self.in_flight = metrics.in_flight.labels(method)
        self.duration = metrics.request_duration.labels(method)
        self._requests: dict[str, Counter] = {}

    def finished(self, code: str, seconds: float) -> None:
        counter = self._requests.get(code)
        if counter is None:
            counter = self._requests[code] = self._metrics.requests.labels(self.method, code)
        counter.inc()
        self.duration.observe(seconds)


class BatcherMetrics:
    """One model version's batcher series, bound once."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self.model, self.version = model, version
        self.queue_duration = metrics.queue_duration.labels(model)
        self.queue_depth = metrics.queue_depth.labels(model)
        self.batch_size = metrics.batch_size.labels(model)
        self.inferences = metrics.inferences.labels(model)
        self.executions = metrics.executions.labels(model)
        self.inference_duration = metrics.inference_duration.labels(model, version)

    def rejected(self, reason: str) -> None:
        self._metrics.rejections.labels(self.model, reason).inc()

    def configured(self, max_rows: int, delay_s: float, max_queue_size: int, instances: int) -> None:
        """The settings this version's batchers run with (every batcher of a version has the same); the
        series go with the version's others (`Metrics.forget`)."""
        m = self._metrics
        gauges = (m.batcher_max_batch_size, m.batcher_max_queue_delay, m.batcher_max_queue_size, m.batcher_instances)
        for gauge, value in zip(gauges, (max_rows, delay_s, max_queue_size, instances), strict=True):
            gauge.labels(self.model, self.version).set(value)
