"""The translator family's own settings: MYELIN_TRANSLATOR__<FIELD>."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class TranslatorSettings(BaseModel):
    """Limits of the translator service (`MYELIN_TRANSLATOR__*`); requests beyond them are refused."""

    max_beam_size: int = Field(8, ge=1, le=64, description="Hypotheses per sentence a request may ask for (beam_size).")
    default_beam_size: int = Field(
        4, ge=1, le=64, description="beam_size when a request leaves it unset (1 is greedy)."
    )
    max_source_tokens: int = Field(
        0,
        ge=0,
        description=(
            "Source subword tokens per sentence; 0 takes the model's own limit (its manifest), else the smaller."
        ),
    )
    max_active_rows: int = Field(
        256,
        ge=1,
        le=8192,
        description=(
            "Hypotheses (sentences x beams, every request together) in one decoder step: the concurrent work."
        ),
    )
    max_pending_sentences: int = Field(
        4096,
        ge=1,
        description="Sentences waiting for room in the decoder batch; more are refused with RESOURCE_EXHAUSTED.",
    )

    @model_validator(mode="after")
    def _check(self) -> TranslatorSettings:
        if self.default_beam_size > self.max_beam_size:
            raise ValueError("translator.default_beam_size cannot exceed translator.max_beam_size")
        if self.max_beam_size > self.max_active_rows:
            raise ValueError("translator.max_beam_size cannot exceed translator.max_active_rows")
        return self
