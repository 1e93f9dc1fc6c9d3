"""The translator family's own metrics: its step loop, one decoder call per step for every request."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from myelin_serving.metrics import BATCH_BUCKETS, Metrics


class TranslatorMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        # Shared with the other families: rows inferred, answer tokens (with end of sentence), and the
        # queue and refusals of what waits for room in the decoder batch.
        self.inferences = metrics.inferences
        self.generated_tokens = metrics.generated_tokens
        self.queue_depth = metrics.queue_depth
        self.rejections = metrics.rejections
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
