"""The generator family's own metrics: its decoding loop."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from myelin_serving.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics


class GeneratorMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        # Shared with the other families: tokens generated.
        self.generated_tokens = metrics.generated_tokens
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
