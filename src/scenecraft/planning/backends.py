"""LLM backends named by a spec string: ``KIND:MODEL[@BASE_URL]``.

=====================================  =======================================================
``openai:gpt-4o``                      OpenAI; key from ``OPENAI_API_KEY``
``openai:MODEL@http://host:port/v1``   any OpenAI-compatible server (vLLM, Ollama, llama.cpp
                                       server, LM Studio); key from ``OPENAI_API_KEY`` if set
``gemini:M@URL``, ``anthropic:M@URL``  the same APIs behind a proxy / gateway (key still needed)
``gemini:gemini-2.0-flash``            Google, package ``google-genai``; key ``GEMINI_API_KEY``
                                       (or ``GOOGLE_API_KEY``)
``anthropic:claude-sonnet-4-5``        Anthropic, package ``anthropic``; key ``ANTHROPIC_API_KEY``
``local:PATH``                         a transformers model folder, or a ``.gguf`` file (needs
                                       the ``gguf`` package), run on CPU/GPU with transformers
=====================================  =======================================================

Keys are read from the environment only, when a request is made, and never appear in messages or
logs (:func:`redact` scrubs them from any error text). Optional packages are imported lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import BackendError, BackendSpecError

__all__ = ["Backend", "BackendSpec", "make_backend", "parse_spec", "redact", "KINDS"]

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
        if not base_url.startswith(("http://", "https://")):
            raise BackendSpecError(f"base URL must start with http:// or https://, got {base_url!r}")
    if not rest.strip():
        raise BackendSpecError(f"LLM spec {spec!r} names no model; write e.g. openai:gpt-4o or local:/path/model.gguf")
    return BackendSpec(kind=kind, model=rest.strip(), base_url=base_url)


def redact(text: str) -> str:
    """``text`` with every configured API key replaced by ``***``."""
    for names in _KEY_VARS.values():
        for name in names:
            secret = os.environ.get(name)
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
    return text


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


@dataclass
class OpenAIBackend:
    """OpenAI or an OpenAI-compatible server. ``timeout`` seconds per request, ``transport_retries``
    retries of transport failures (connection errors, timeouts, 429 and 5xx), done by the client."""

    spec: BackendSpec
    timeout: float = 60.0
    transport_retries: int = 2
    use_schema: bool = True

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        openai = _import("openai", "openai", "openai")
        key = _key("openai", required=self.spec.base_url is None) or "not-needed"
        client = openai.OpenAI(api_key=key, base_url=self.spec.base_url, timeout=self.timeout,
                               max_retries=self.transport_retries)
        # OpenAI's own API wants max_completion_tokens; compatible servers know max_tokens.
        limit = "max_tokens" if self.spec.base_url else "max_completion_tokens"
        kwargs: dict[str, Any] = {"model": self.spec.model, "messages": messages, limit: max_tokens,
                                  "temperature": 0}
        if schema is not None and self.use_schema:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "scene", "schema": schema, "strict": False}}
        attempts = 1 + self.transport_retries
        try:
            reply = client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as error:
            raise BackendError(f"{self.spec} timed out after {attempts} attempt(s) of {self.timeout:g} s") from error
        except openai.APIConnectionError as error:
            raise BackendError(redact(f"{self.spec} unreachable after {attempts} attempt(s): {error}")) from error
        except openai.APIStatusError as error:
            body = redact(str(getattr(error, "message", "") or ""))[:300]
            raise BackendError(f"{self.spec} answered HTTP {error.status_code} after {attempts} attempt(s): {body}") \
                from error
        finally:
            client.close()
        try:
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as error:
            raise BackendError(f"{self.spec} sent a reply without choices[0].message.content") from error
        if not isinstance(content, str):
            raise BackendError(f"{self.spec} sent an empty reply")
        return content


@dataclass
class GeminiBackend:
    """Google Gemini through ``google-genai`` (JSON mode; the schema is described in the prompt)."""

    spec: BackendSpec
    timeout: float = 60.0
    transport_retries: int = 2

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        genai = _import("google.genai", "google-genai", "gemini")
        types = _import("google.genai.types", "google-genai", "gemini")
        try:
            client = genai.Client(api_key=_key("gemini"), http_options=types.HttpOptions(
                base_url=self.spec.base_url, timeout=int(self.timeout * 1000),
                retry_options=types.HttpRetryOptions(attempts=1 + self.transport_retries)))
        except BackendError:
            raise
        except Exception as error:  # an SDK too old for these options
            raise BackendError(f"{self.spec}: cannot set up google-genai ({type(error).__name__}: {error})"[:300]) \
                from error
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [types.Content(role="model" if m["role"] == "assistant" else "user",
                                  parts=[types.Part(text=m["content"])]) for m in messages if m["role"] != "system"]
        config = types.GenerateContentConfig(system_instruction=system, max_output_tokens=max_tokens, temperature=0,
                                             response_mime_type="application/json" if schema else None)
        try:
            reply = client.models.generate_content(model=self.spec.model, contents=contents, config=config)
        except Exception as error:  # the SDK's error classes vary between versions
            raise BackendError(redact(f"{self.spec} failed: {type(error).__name__}: {error}")[:400]) from error
        return reply.text or ""


@dataclass
class AnthropicBackend:
    """Anthropic's messages API (the schema is described in the prompt)."""

    spec: BackendSpec
    timeout: float = 60.0
    transport_retries: int = 2

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, max_tokens: int) -> str:
        anthropic = _import("anthropic", "anthropic", "anthropic")
        client = anthropic.Anthropic(api_key=_key("anthropic"), base_url=self.spec.base_url, timeout=self.timeout,
                                     max_retries=self.transport_retries)
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [m for m in messages if m["role"] != "system"]
        try:
            reply = client.messages.create(model=self.spec.model, system=system, messages=chat, max_tokens=max_tokens)
        except anthropic.APIError as error:
            raise BackendError(redact(f"{self.spec} failed: {type(error).__name__}: {error}")[:400]) from error
        return "".join(getattr(block, "text", "") for block in reply.content)


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
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)
        self._model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), **kwargs).to(self.device).eval()

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


def make_backend(spec: str | BackendSpec, *, timeout: float = 60.0, transport_retries: int = 2) -> Backend:
    """The backend for ``spec``. Nothing is imported or loaded until the first request.

    Args:
        spec: ``KIND:MODEL[@BASE_URL]`` (see the module docstring) or a parsed BackendSpec.
        timeout: seconds per request for remote backends (default 60).
        transport_retries: retries of transport failures for remote backends (default 2; at most 5).
    """
    parsed = spec if isinstance(spec, BackendSpec) else parse_spec(spec)
    if not (0 < timeout <= 3600):
        raise BackendSpecError(f"timeout must be in (0, 3600] seconds, got {timeout!r}")
    if not (isinstance(transport_retries, int) and 0 <= transport_retries <= 5):
        raise BackendSpecError(f"transport_retries must be an integer in 0..5, got {transport_retries!r}")
    if parsed.kind == "openai":
        return OpenAIBackend(parsed, timeout=timeout, transport_retries=transport_retries)
    if parsed.kind == "gemini":
        return GeminiBackend(parsed, timeout=timeout, transport_retries=transport_retries)
    if parsed.kind == "anthropic":
        return AnthropicBackend(parsed, timeout=timeout, transport_retries=transport_retries)
    return LocalBackend(parsed)
