"""The one error hierarchy every layer raises and catches.

Foreign errors (openai, google-genai, aiohttp, botocore, pydantic) are translated once, at the
boundary that sees them, into these classes, keeping the original as ``__cause__``. Code above a
boundary branches on these types only. Messages are one line, name the problem and the fix, and
never contain a secret::

    SynthError
     +-- ConfigError            bad job file, unknown provider prefix, invalid schema ... (exit 2)
     |    +-- KeyMissing        an environment variable named for a key is not set
     +-- StorageError           bucket unreachable, permission denied, spec mismatch on resume
     +-- BudgetExceeded         the job's spending limit is reached
     +-- JobStopped             too many recent requests failed, or a long outage: the job stops early
     +-- ProviderError          anything a model call can end with
          +-- RateLimited       429; carries retry_after (seconds) when the provider sent one
          +-- Transient         5xx, timeouts, resets: retry with backoff
          +-- AuthError         401/403: the key is revoked or wrong; disable it
          +-- BadRequest        4xx other than the above: retrying the same request cannot help
          +-- MalformedOutput   unparseable or schema-invalid output: re-ask, then dead letter
          +-- NoKeysLeft        every key of a provider is disabled
"""

from __future__ import annotations


class SynthError(Exception):
    """Base class: its message is shown to the user as one line."""

    kind: str = "error"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # one line per problem; no stray whitespace
        super().__init__("\n".join(" ".join(line.split()) for line in str(message).splitlines()))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(SynthError):
    kind = "config"
    exit_code = 2


class KeyMissing(ConfigError):
    kind = "key_missing"


class StorageError(SynthError):
    kind = "storage"
    exit_code = 3


class BudgetExceeded(SynthError):
    kind = "budget"
    exit_code = 4


class JobStopped(SynthError):
    """The job stopped itself early (too many recent requests failed); what is made is committed."""

    kind = "stopped"
    exit_code = 7


class ProviderError(SynthError):
    """A model call failed. ``retryable`` says whether the same request may succeed later."""

    kind = "provider"
    retryable = False

    def __init__(self, message: str, *, status: int | None = None, key_alias: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.key_alias = key_alias


class RateLimited(ProviderError):
    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        key_alias: str | None = None,
        limits: object | None = None,
    ) -> None:
        super().__init__(message, status=status, key_alias=key_alias)
        self.retry_after = retry_after
        self.limits = limits  # a RateLimitInfo parsed from the response headers, when present


class Transient(ProviderError):
    kind = "transient"
    retryable = True


class AuthError(ProviderError):
    kind = "auth"


class BadRequest(ProviderError):
    kind = "bad_request"


class MalformedOutput(ProviderError):
    kind = "malformed_output"
    retryable = True

    def __init__(self, message: str, *, raw: str | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.raw = raw


class NoKeysLeft(ProviderError):
    kind = "no_keys_left"
    exit_code = 5


__all__ = [
    "AuthError",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "JobStopped",
    "KeyMissing",
    "MalformedOutput",
    "NoKeysLeft",
    "ProviderError",
    "RateLimited",
    "StorageError",
    "SynthError",
    "Transient",
]
