"""One OpenAI-compatible chat client for every service that may ask a language model.

The hypothesis service asks for knob changes and KernelEvolve for kernel source; both treat the
answer as untrusted text that their own parser validates. This module only carries the request
and the answer: retries on transient failures, a bearer token when one is configured, a bound on
how long to wait.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # KernelEvolve's parser runs where only torch and pydantic may be installed
    from rea.settings import Settings

Chat = list[dict[str, str]]
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


class UnusableAnswer(ValueError):
    """An answer that is not the one JSON object asked for; the message says why."""


def listed(answer: str, key: str, max_chars: int) -> list[Any]:
    """The list under ``key`` in the one JSON object an answer must be (a code fence around it
    is tolerated); raises :class:`UnusableAnswer` with the reason."""
    if len(answer) > max_chars:
        raise UnusableAnswer(f"answer is {len(answer)} characters, more than {max_chars}")
    try:
        document = json.loads(_FENCE.sub("", answer))
    except json.JSONDecodeError as exc:
        raise UnusableAnswer(f"answer is not JSON: {exc.msg} at character {exc.pos}") from exc
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise UnusableAnswer(f"answer is not an object with a {key!r} list")
    return document[key]


@dataclass(frozen=True)
class ChatEndpoint:
    """Where to ask and how long to wait; ``api_key`` is sent as a bearer token when set."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0


def endpoint_from(
    settings: Settings, model: str | None = None, timeout_s: float | None = None
) -> ChatEndpoint | None:
    """The configured endpoint (``REA_LLM_*``), or None when none is."""
    if not settings.llm_base_url:
        return None
    return ChatEndpoint(
        base_url=settings.llm_base_url,
        model=model or settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        timeout_s=timeout_s or settings.llm_timeout_s,
    )


def _transient(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


async def ask(endpoint: ChatEndpoint, chat: Chat, *, temperature: float = 0.0) -> str:
    """The model's answer text; retries connection errors, 429 and 5xx a few times. Raises
    :class:`httpx.HTTPError` when the endpoint gives no answer, ``ValueError`` (or ``KeyError``,
    ``IndexError``, ``TypeError``) when the answer is not a chat completion. Its HTTP client and
    retry library are imported here: reading answers (:func:`listed`) needs neither."""
    import httpx
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    body = {"model": endpoint.model, "messages": chat, "temperature": temperature}
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    async with httpx.AsyncClient(timeout=endpoint.timeout_s, headers=headers) as http:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception(_transient),
            reraise=True,
        ):
            with attempt:
                response = await http.post(url, json=body)
                response.raise_for_status()
    content = response.json()["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not text")
    return content
