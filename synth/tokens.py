"""Token estimates without a tokenizer: about four characters per token.

Used for rate-limit reservations and budget holds (``synth.providers``) and by the simulator and
the offline ``sim`` provider to count usage, so estimates and counts agree everywhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_tokens", "prompt_tokens"]


def estimate_tokens(text: str) -> int:
    """About four characters per token: the heuristic both clients and the simulator use."""
    return max(1, -(-len(text) // 4))


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts / Gemini parts
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens of a chat: every message's content plus 4 per message, plus tool-call arguments.

    Accepts OpenAI wire dicts (``tool_calls[].function.arguments``) and ``ChatMessage`` dumps
    (``tool_calls[].arguments``)."""
    total = 0
    for m in messages:
        total += estimate_tokens(_content_text(m.get("content"))) + 4
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function") or tc
            total += estimate_tokens(str(fn.get("arguments") or ""))
    return total
