"""LLM backends named by a spec string: ``KIND:MODEL[@BASE_URL]``.

=====================================  =======================================================
``openai:gpt-4o``                      OpenAI; key from ``OPENAI_API_KEY``
``openai:MODEL@http://host:port/v1``   any OpenAI-compatible server (vLLM, Ollama, llama.cpp
                                       server, LM Studio); key from ``OPENAI_API_KEY`` if set
``gemini:M@URL``, ``anthropic:M@URL``  the same APIs behind a proxy / gateway (key still needed)
``gemini:gemini-2.0-flash``            Google's REST API; key ``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``)
``anthropic:claude-sonnet-4-5``        Anthropic's REST API; key ``ANTHROPIC_API_KEY``
``local:PATH``                         a transformers model folder, or a ``.gguf`` file (needs
                                       the ``gguf`` package), run on CPU/GPU with transformers
=====================================  =======================================================

The remote backends speak each API's JSON over :mod:`scenecraft.planning.transport` (standard
library; bounded time, size, retries and redirects), so they need no SDK. Keys are read from the
environment only, when a request is made, and never appear in messages, logs, plans or the cache:
the transport scrubs them from error texts and each backend from the reply text (a server that
echoes the ``Authorization`` header cannot leak it). The local backend imports transformers lazily.
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import BackendError, BackendSpecError
from .transport import TransportLimits, check_base_url, post_json, scrub

__all__ = ["Backend", "BackendSpec", "TransportLimits", "make_backend", "parse_spec", "redact", "supports_images",
           "KINDS"]

logger = logging.getLogger(__name__)

KINDS = ("openai", "gemini", "anthropic", "local")
_KEY_VARS = {"openai": ("OPENAI_API_KEY",), "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
             "anthropic": ("ANTHROPIC_API_KEY",)}


@dataclass(frozen=True)
class BackendSpec:
    """A parsed ``--llm`` spec: ``kind`` (one of KINDS), ``model`` and an optional ``base_url``."""

    kind: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_spec(spec: str) -> BackendSpec:
    """Parse ``KIND:MODEL[@BASE_URL]``; raises BackendSpecError naming the allowed forms."""
    if not isinstance(spec, str) or ":" not in spec:
        raise BackendSpecError(f"LLM spec must look like KIND:MODEL (KIND one of {list(KINDS)}), got {spec!r}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise BackendSpecError(f"unknown LLM kind {kind!r} in {spec!r}; allowed: {list(KINDS)}")
    base_url = None
    if kind != "local" and "@" in rest:
        rest, _, base_url = rest.partition("@")
        check_base_url(base_url)
    if not rest.strip():
        raise BackendSpecError(f"LLM spec {spec!r} names no model; write e.g. openai:gpt-4o or local:/path/model.gguf")
    return BackendSpec(kind=kind, model=rest.strip(), base_url=base_url)


def redact(text: str) -> str:
    """``text`` with every configured API key (and its URL-encoded and base64 forms) replaced by ``***``."""
    return scrub(text, _secrets(None))


def _key(kind: str, required: bool = True) -> str | None:
    for name in _KEY_VARS[kind]:
        value = os.environ.get(name)
        if value:
            return value
    if required:
        raise BackendError(f"{kind} backend needs an API key in the environment variable "
                           f"{' or '.join(_KEY_VARS[kind])}")
    return None


def _import(module: str, package: str, kind: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise BackendError(f"the {kind} backend needs the package {package!r}: pip install {package}") from error


class Backend(Protocol):
    """Anything that turns chat messages into reply text."""

    spec: BackendSpec

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        ...


def _split_messages(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """The system text, and the other messages in order."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    return system, [m for m in messages if m["role"] != "system"]


def _reply_error(spec: BackendSpec, what: str) -> BackendError:
    return BackendError(f"{spec} sent a reply without {what}")


_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def supports_images(backend: Any) -> bool:
    """Whether ``backend`` can be sent a picture (it has ``complete_with_image``; the local backend has not)."""
    return callable(getattr(backend, "complete_with_image", None))


def _b64(image: bytes) -> str:
    if not isinstance(image, (bytes, bytearray)) or not image:
        raise BackendSpecError("an image sent to an LLM must be its encoded bytes (PNG, JPEG...), "
                               f"got {type(image).__name__}")
    return base64.b64encode(bytes(image)).decode("ascii")


def _media_type(media_type: str) -> str:
    if media_type not in _IMAGE_TYPES:
        raise BackendSpecError(f"an image sent to an LLM must be one of {list(_IMAGE_TYPES)}, got {media_type!r}")
    return media_type


def _with_image(messages: list[dict[str, Any]], parts: list[dict[str, Any]], text_part) -> list[dict[str, Any]]:
    """``messages`` with the last user message's content as ``[*parts, text_part(its text)]`` (a copy)."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None or not isinstance(messages[last].get("content"), str):
        raise BackendSpecError("an image is sent beside a user message's text; the messages have none")
    copied = [dict(m) for m in messages]
    copied[last]["content"] = [*parts, text_part(messages[last]["content"])]
    return copied


@dataclass
class OpenAIBackend:
    """OpenAI's chat completions API, or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio).

    ``limits`` bound each request (:class:`~scenecraft.planning.transport.TransportLimits`: total
    deadline, body caps, retries, ``Retry-After`` cap, redirects). The key (``OPENAI_API_KEY``) is
    required for OpenAI itself and sent when set for a compatible server.
    """

    spec: BackendSpec
    limits: TransportLimits = field(default_factory=TransportLimits)
    use_schema: bool = True

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        key = _key("openai", required=self.spec.base_url is None)
        # OpenAI's own API wants max_completion_tokens; compatible servers know max_tokens.
        limit = "max_tokens" if self.spec.base_url else "max_completion_tokens"
        payload: dict[str, Any] = {"model": self.spec.model, "messages": messages, limit: max_tokens,
                                   "temperature": 0}
        if schema is not None and self.use_schema:
            payload["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": "scene", "schema": schema, "strict": False}}
        url = (self.spec.base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        reply = post_json(url, payload, headers=headers, limits=self.limits, label=str(self.spec),
                          secrets=_secrets(key))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise _reply_error(self.spec, "choices[0].message.content") from error
        if not isinstance(content, str):
            raise BackendError(f"{self.spec} sent an empty reply")
        return scrub(content, _secrets(key))

    def complete_with_image(self, messages: list[dict[str, Any]], image: bytes, *, max_tokens: int,
                            media_type: str = "image/png") -> str:
        """``complete`` with ``image`` (encoded bytes) before the last user message's text, as an ``image_url``
        data URL (OpenAI's vision input; OpenAI-compatible servers with a vision model take the same)."""
        url = f"data:{_media_type(media_type)};base64,{_b64(image)}"
        parts = [{"type": "image_url", "image_url": {"url": url}}]
        return self.complete(_with_image(messages, parts, lambda text: {"type": "text", "text": text}),
                             schema=None, max_tokens=max_tokens)


@dataclass
class GeminiBackend:
    """Google Gemini's ``generateContent`` REST API (JSON mode; the schema is described in the prompt).

    Key from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``; ``limits`` as for :class:`OpenAIBackend`.
    """

    spec: BackendSpec
    limits: TransportLimits = field(default_factory=TransportLimits)

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        key = _key("gemini")
        system, chat = _split_messages(messages)
        payload: dict[str, Any] = {
            "contents": [{"role": "model" if m["role"] == "assistant" else "user",
                          "parts": m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]}
                         for m in chat],
            "generationConfig": {"maxOutputTokens": max_tokens, "temperature": 0,
                                 **({"responseMimeType": "application/json"} if schema else {})},
        }
        if system:
            payload["systemInstruction"] = {"parts": [{"text": system}]}
        model = urllib.parse.quote(self.spec.model.removeprefix("models/"), safe="-._~")
        base = (self.spec.base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        reply = post_json(f"{base}/v1beta/models/{model}:generateContent", payload, headers={"x-goog-api-key": key},
                          limits=self.limits, label=str(self.spec), secrets=_secrets(key))
        try:
            parts = reply["candidates"][0]["content"]["parts"]
            text = "".join(part.get("text", "") for part in parts if isinstance(part, dict))
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            blocked = reply.get("promptFeedback", {}).get("blockReason") if isinstance(reply, dict) else None
            if isinstance(blocked, str):
                raise BackendError(scrub(f"{self.spec} refused the prompt ({blocked})", _secrets(key))) from error
            raise _reply_error(self.spec, "candidates[0].content.parts") from error
        if not isinstance(text, str):
            raise _reply_error(self.spec, "text parts")
        return scrub(text, _secrets(key))

    def complete_with_image(self, messages: list[dict[str, Any]], image: bytes, *, max_tokens: int,
                            media_type: str = "image/png") -> str:
        """``complete`` with ``image`` (encoded bytes) before the last user message's text, as an ``inline_data``
        part."""
        parts = [{"inline_data": {"mime_type": _media_type(media_type), "data": _b64(image)}}]
        return self.complete(_with_image(messages, parts, lambda text: {"text": text}), schema=None,
                             max_tokens=max_tokens)


@dataclass
class AnthropicBackend:
    """Anthropic's messages REST API (the schema is described in the prompt).

    Key from ``ANTHROPIC_API_KEY``; ``limits`` as for :class:`OpenAIBackend`.
    """

    spec: BackendSpec
    limits: TransportLimits = field(default_factory=TransportLimits)

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        key = _key("anthropic")
        system, chat = _split_messages(messages)
        payload: dict[str, Any] = {"model": self.spec.model, "messages": chat, "max_tokens": max_tokens,
                                   "temperature": 0}
        if system:
            payload["system"] = system
        base = (self.spec.base_url or "https://api.anthropic.com").rstrip("/")
        reply = post_json(f"{base}/v1/messages", payload, headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                          limits=self.limits, label=str(self.spec), secrets=_secrets(key))
        try:
            text = "".join(block["text"] for block in reply["content"]
                           if isinstance(block, dict) and block.get("type") == "text")
        except (KeyError, TypeError) as error:
            raise _reply_error(self.spec, "content[].text") from error
        if not isinstance(text, str):
            raise _reply_error(self.spec, "text blocks")
        return scrub(text, _secrets(key))

    def complete_with_image(self, messages: list[dict[str, Any]], image: bytes, *, max_tokens: int,
                            media_type: str = "image/png") -> str:
        """``complete`` with ``image`` (encoded bytes) before the last user message's text, as a base64 image block."""
        block = {"type": "image", "source": {"type": "base64", "media_type": _media_type(media_type),
                                             "data": _b64(image)}}
        return self.complete(_with_image(messages, [block], lambda text: {"type": "text", "text": text}),
                             schema=None, max_tokens=max_tokens)


def _secrets(key: str | None) -> tuple[str, ...]:
    """The key sent and every configured key, for scrubbing."""
    configured = tuple(os.environ.get(name) or "" for names in _KEY_VARS.values() for name in names)
    return tuple(secret for secret in (key or "", *configured) if secret)


@dataclass
class LocalBackend:
    """A local causal LM with transformers: ``model`` is a model folder or a ``.gguf`` file.

    Loaded on the first call and kept by this object (no global cache). Greedy decoding.
    ``device`` is "cpu" by default; torch threads are left as the caller set them.
    """

    spec: BackendSpec
    device: str = "cpu"
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def load(self) -> None:
        if self._model is not None:
            return
        transformers = _import("transformers", "transformers", "local")
        path = Path(self.spec.model).expanduser()
        if not path.exists():
            raise BackendError(f"local model {str(path)!r} does not exist (give a model folder or a .gguf file)")
        kwargs: dict[str, Any] = {}
        folder = path
        if path.is_file():
            if path.suffix != ".gguf":
                raise BackendError(f"local model file must be a .gguf file, got {path.name!r}")
            _import("gguf", "gguf", "local (.gguf)")
            folder, kwargs["gguf_file"] = path.parent, path.name
        logger.info("loading local model %s", path)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        except Exception as error:  # transformers' and gguf's readers raise many types on a foreign or corrupt file
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            raise BackendError(f"cannot load the local model {str(path)!r}: it is not a causal language model "
                               f"transformers can read ({type(error).__name__}: {reason})") from error
        self._tokenizer, self._model = tokenizer, model.to(self.device).eval()

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        import torch

        self.load()
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
        inputs = tokenizer(text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self._model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                          pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def make_backend(spec: str | BackendSpec, *, timeout: float = 60.0, transport_retries: int = 2,
                 limits: TransportLimits | None = None) -> Backend:
    """The backend for ``spec``. Nothing is imported or loaded until the first request.

    Args:
        spec: ``KIND:MODEL[@BASE_URL]`` (see the module docstring) or a parsed BackendSpec.
        timeout: total seconds per request attempt for remote backends (default 60).
        transport_retries: retries of transport failures for remote backends (default 2; at most 5).
        limits: every transport bound at once (overrides ``timeout`` and ``transport_retries``);
            default ``TransportLimits(timeout=timeout, retries=transport_retries)``.
    """
    parsed = spec if isinstance(spec, BackendSpec) else parse_spec(spec)
    limits = limits or TransportLimits(timeout=timeout, retries=transport_retries)
    if parsed.kind == "openai":
        return OpenAIBackend(parsed, limits=limits)
    if parsed.kind == "gemini":
        return GeminiBackend(parsed, limits=limits)
    if parsed.kind == "anthropic":
        return AnthropicBackend(parsed, limits=limits)
    return LocalBackend(parsed)
