"""Settings of the LLM API simulator: one global config, patchable at runtime, plus per-key overrides."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A "typical" answer is about 100 output tokens (fake_text averages roughly that); --latency-ms is the
# mean total latency of such an answer.
TYPICAL_OUTPUT_TOKENS = 100
TTFT_SHARE = 0.4


class SimConfig(BaseModel):
    """Everything the simulator can be told. ``None`` limits mean unlimited."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(0, ge=0, le=65535, description="port to listen on (0 picks a free one)")
    rpm: float | None = Field(None, gt=0, description="requests per minute per key")
    tpm: float | None = Field(None, gt=0, description="tokens per minute per key (prompt + max output)")
    concurrency: int | None = Field(None, gt=0, description="most requests in flight per key")
    burst_seconds: float = Field(1.0, gt=0, description="bucket capacity in seconds of refill")
    latency_ms: float | None = Field(None, ge=0, description="mean total latency of a typical answer")
    ttft_ms: float | None = Field(None, ge=0, description="time to first token")
    tpot_ms: float | None = Field(None, ge=0, description="time per output token")
    jitter: float = Field(0.0, ge=0, le=1, description="latency varies uniformly by +- this fraction")
    error_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered 500/503")
    malformed_rate: float = Field(0.0, ge=0, le=1, description="share of structured answers made invalid")
    hang_rate: float = Field(0.0, ge=0, le=1, description="share of requests never answered")
    hang_s: float = Field(300.0, gt=0, description="how long a hanging request is held open")
    revoked: list[str] = Field(default_factory=list, repr=False, description="keys answered 401")
    keys: list[str] | None = Field(None, repr=False, description="only these keys are accepted (default: any)")
    seed: int = Field(0, description="seed of the fault and jitter draws")
    default_max_tokens: int = Field(256, gt=0, description="output reservation when a request sets none")
    embedding_dim: int = Field(64, gt=0, description="embedding size when a request sets none")

    @field_validator("revoked", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    def latency_s(self) -> tuple[float, float]:
        """(time to first token, time per output token) in seconds."""
        if self.ttft_ms is not None or self.tpot_ms is not None:
            return (self.ttft_ms or 0.0) / 1000, (self.tpot_ms or 0.0) / 1000
        if self.latency_ms:
            total = self.latency_ms / 1000
            return total * TTFT_SHARE, total * (1 - TTFT_SHARE) / TYPICAL_OUTPUT_TOKENS
        return 0.0, 0.0


class KeyOverride(BaseModel):
    """Per-key settings that win over the global config (unset fields inherit it)."""

    model_config = ConfigDict(extra="forbid")

    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0)
    revoked: bool | None = None
