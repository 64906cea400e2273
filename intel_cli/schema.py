"""The intelligence we ask Claude for: its fields, its JSON schema, and the prompt version.

Field names are those of the original Audio Intel service (SPEC 2.2). This
module has no heavy imports: the simulator, the reader/writer and the client
all use it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Bump when the prompt or the schema changes: cached results are reused only
# for the same prompt version (SPEC 3.3).
PROMPT_VERSION = "2026-12-04.2"

Confidence = Literal["High", "Medium", "Low"]


class Intelligence(BaseModel):
    """Validated intelligence for one contact."""

    model_config = ConfigDict(extra="forbid")

    platform: str = Field(
        description="Station, publication, playlist or outlet the contact works for"
    )
    role: str = Field(description="What the contact does there")
    format: str = Field(description="Format of the station/publication/playlist")
    coverage: str = Field(description="Reach and geography: national, regional, local, online")
    genres: list[str] = Field(description="Genres they cover")
    contactMethod: str = Field(description="How best to contact them")
    bestTiming: str = Field(description="When to pitch")
    submissionGuidelines: str = Field(description="How they want submissions")
    pitchTips: list[str] = Field(description="Concrete pitching advice")
    confidence: Confidence = Field(description="How confident this intelligence is")
    reasoning: str = Field(description="Why: what the answer is based on")


INTEL_FIELDS: tuple[str, ...] = tuple(Intelligence.model_fields)

# CSV column for each intelligence field, in output order (SPEC 2.2)
INTEL_COLUMNS: dict[str, str] = {
    "platform": "intel_platform",
    "role": "intel_role",
    "format": "intel_format",
    "coverage": "intel_coverage",
    "genres": "intel_genres",
    "contactMethod": "intel_contact_method",
    "bestTiming": "intel_best_timing",
    "submissionGuidelines": "intel_submission_guidelines",
    "pitchTips": "intel_pitch_tips",
    "confidence": "intel_confidence",
    "reasoning": "intel_reasoning",
}

OUTPUT_COLUMNS: tuple[str, ...] = (
    "intel_status",
    *INTEL_COLUMNS.values(),
    "intel_error",
    "intel_model",
    "intel_input_tokens",
    "intel_output_tokens",
    "intel_cost_usd",
    "intel_latency_ms",
    "intel_attempts",
    "intel_batch_id",
)


def json_schema() -> dict[str, Any]:
    """The schema sent as `output_config.format` (and as the forced tool's input schema)."""
    schema = Intelligence.model_json_schema()
    schema.pop("title", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
    schema["additionalProperties"] = False
    schema["required"] = list(INTEL_FIELDS)
    return schema
