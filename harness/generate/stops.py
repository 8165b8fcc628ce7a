"""MultiPL-E's stop-token rule, applied to a completion (never to the prompt)."""

from __future__ import annotations


def truncate_at_stop(completion: str, stop_tokens: tuple[str, ...] | list[str]) -> str:
    """Cut at the earliest occurrence of any stop token; the token itself is dropped."""
    cut = len(completion)
    for token in stop_tokens:
        at = completion.find(token)
        if at != -1 and at < cut:
            cut = at
    return completion[:cut]


def stop_index(completion: str, stop_tokens: tuple[str, ...] | list[str]) -> int | None:
    """Index where the completion is cut, or None while no stop token occurs."""
    cut = truncate_at_stop(completion, stop_tokens)
    return len(cut) if len(cut) < len(completion) else None
