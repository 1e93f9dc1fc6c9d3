"""The generator family's own settings: MYELIN_GENERATION__<FIELD> (`Family.settings_key` "generation")."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GenerationSettings(BaseModel):
    """Limits of the generator family's decoding loop (one loop per model version)."""

    max_sequences: int = Field(
        64,
        ge=1,
        le=1024,
        description=(
            "Sequences one model version decodes at once (waiting for their prompt or "
            "generating); more are refused with RESOURCE_EXHAUSTED."
        ),
    )
    max_prompt_tokens: int = Field(
        1024, ge=1, description="Prompt tokens one request may bring (the model's context caps it further)."
    )
    max_context_tokens: int = Field(
        4096,
        ge=2,
        description="Prompt + generated tokens one sequence may reach, for models without a fixed context (GRU).",
    )
    default_max_new_tokens: int = Field(
        128, ge=1, description="max_new_tokens when a request leaves it at 0 (capped by what is left of the context)."
    )
    max_stop_sequences: int = Field(8, ge=0, description="Stop sequences one request may give.")
    max_stop_length: int = Field(64, ge=1, description="Characters per stop sequence.")
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="When a version is unloaded, how long its sequences may run on before being cancelled.",
    )
    stream_interval_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description=(
            "A stream's tokens go out at most this often (milliseconds); tokens produced "
            "meanwhile travel together in one message. First and last tokens go out at once. 0: "
            "after every step."
        ),
    )
    step_spinning: bool = Field(
        True,
        description=(
            "The step graph's onnxruntime threads busy-wait between the nodes of a step instead "
            "of sleeping (whatever intra_op_spinning says for the other families): decoding has "
            "its own thread, and on 2 cores a step of one row took about half the time."
        ),
    )
