"""Long conversations: the oldest turns leave the prompt so that the newest fit the model's context with
room for the reply. The system prompt always stays. No torch or llama_cpp here."""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import ChattuneError


def reply_room(max_tokens: int, limit: int) -> int:
    """Tokens kept free for the reply: the reply's limit, but at most a quarter of the context, so that a
    long max_tokens does not push out the conversation."""
    return max(1, min(max_tokens, limit // 4))


def fit_context(messages: list[dict], count: Callable[[list[dict]], int], limit: int,
                room: int) -> tuple[list[dict], int, int]:
    """The messages to prompt with, how many of the oldest were left out, and the prompt's length in
    tokens (`count` renders and tokenizes). Whole turns leave, oldest first, until the prompt leaves `room`
    tokens free; the last turn always stays, and if even it leaves no token for the reply, that is the
    user's error."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    system = messages[:head]
    starts = [i for i in range(head, len(messages)) if messages[i]["role"] == "user"] or [head]
    if starts[0] != head:
        starts.insert(0, head)  # the conversation opens with the assistant: that opening can leave too

    def candidate(j: int) -> list[dict]:
        return system + messages[starts[j]:]

    n_tokens = count(messages)
    if n_tokens + room <= limit:
        return messages, 0, n_tokens
    low, high = 1, len(starts) - 1  # the fewest turns to drop lies in [low, high]; high always "fits"
    lengths = {}
    while low < high:
        middle = (low + high) // 2
        lengths[middle] = count(candidate(middle))
        if lengths[middle] + room <= limit:
            high = middle
        else:
            low = middle + 1
    kept = candidate(high)
    n_tokens = lengths[high] if high in lengths else count(kept)
    if n_tokens >= limit:
        raise ChattuneError(
            f"the last message is {n_tokens} tokens with the system prompt, more than the model's context of {limit}",
            "shorten the message, or use a model with a longer context",
        )
    return kept, len(messages) - len(kept), n_tokens


def common_prefix(held, tokens) -> int:
    """How many leading tokens a KV cache holding `held` shares with a prompt of `tokens`."""
    n = 0
    for a, b in zip(held, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n
