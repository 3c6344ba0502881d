"""Prompt encoding through the pipeline's own ``encode_prompt``, with long prompts chunked.

A prompt longer than the tokenizer's window (75 tokens + BOS/EOS for CLIP) is split at word
boundaries, preferring commas, into chunks that each fit; each chunk is encoded on its own and the
embeddings are concatenated along the sequence (the A1111/compel convention). When a positive and
a negative prompt of the same slot differ in chunk count, the shorter is padded with the empty
prompt's embedding, as compel does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbones import pipeline_family

__all__ = ["PromptEncoder", "EncodedSlots", "split_into_chunks"]


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)


def split_into_chunks(tokenizer, text: str) -> list[str]:
    """Split ``text`` into pieces of at most ``model_max_length - 2`` tokens each."""
    budget = tokenizer.model_max_length - 2
    if _token_count(tokenizer, text) <= budget:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    last_comma = -1  # index in ``current`` after which a comma ended a word
    for word in text.split():
        if _token_count(tokenizer, word) > budget:
            raise ValueError(f"the word {word[:40]!r}... alone is longer than the text encoder's {budget}-token window")
        if current and _token_count(tokenizer, " ".join([*current, word])) > budget:
            cut = last_comma + 1 if last_comma >= 0 else len(current)
            chunks.append(" ".join(current[:cut]))
            current = current[cut:]
            last_comma = -1
        current.append(word)
        if word.endswith(","):
            last_comma = len(current) - 1
    if current:
        chunks.append(" ".join(current))
    return chunks


@dataclass
class EncodedSlots:
    """Text embeddings of all prompt slots, concatenated along the sequence.

    ``cond``/``uncond`` have shape ``(1, tokens, dim)``; ``spans`` gives each slot's token range.
    ``pooled``/``negative_pooled`` are SDXL's pooled embeddings of the base slot (else ``None``).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    spans: list[tuple[int, int]]
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None


class PromptEncoder:
    """Encodes texts with a pipeline's ``encode_prompt`` (SD 1.x/2.x or SDXL), caching repeats."""

    def __init__(self, pipe, device: torch.device) -> None:
        self.pipe = pipe
        self.device = device
        self.is_sdxl = pipeline_family(pipe) == "sdxl"
        self.chunk_length = pipe.tokenizer.model_max_length  # tokens of one encoded window (BOS + 75 + EOS in CLIP)
        self._cache: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def encode_chunk(self, text: str, negative: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(embeds (1, L, D), pooled or None)`` of one window-sized text."""
        key = (text, negative)
        if key not in self._cache:
            self._cache[key] = self._encode_uncached(text, negative)
        return self._cache[key]

    def _encode_uncached(self, text: str, negative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.is_sdxl:
            embeds, _ = self.pipe.encode_prompt(text, self.device, 1, False)
            return embeds, None
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            text, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if negative and not text and self.pipe.config.force_zeros_for_empty_prompt:
            # What SDXL does for an empty negative prompt: zero embeddings.
            return torch.zeros_like(embeds), torch.zeros_like(pooled)
        return embeds, pooled

    def encode(self, text: str, negative: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Chunk embeddings of ``text`` and the pooled embedding of its first chunk."""
        tokenizer = self.pipe.tokenizer
        pieces = [self.encode_chunk(chunk, negative) for chunk in split_into_chunks(tokenizer, text)] if text else [
            self.encode_chunk("", negative)
        ]
        return [embeds for embeds, _ in pieces], pieces[0][1]

    def encode_slots(self, prompts: list[str], negatives: list[str]) -> EncodedSlots:
        """Encode slot ``i`` as ``prompts[i]`` (cond) and ``negatives[i]`` (uncond)."""
        cond_parts, uncond_parts, spans = [], [], []
        pooled = negative_pooled = None
        position = 0
        for index, (prompt, negative) in enumerate(zip(prompts, negatives, strict=True)):
            cond, cond_pooled = self.encode(prompt)
            uncond, uncond_pooled = self.encode(negative, negative=True)
            while len(cond) < len(uncond):
                cond.append(self.encode_chunk("")[0])
            while len(uncond) < len(cond):
                uncond.append(self.encode_chunk("", negative=True)[0])
            if index == 0:
                pooled, negative_pooled = cond_pooled, uncond_pooled
            cond_parts.extend(cond)
            uncond_parts.extend(uncond)
            length = sum(part.shape[1] for part in cond)
            spans.append((position, position + length))
            position += length
        return EncodedSlots(
            cond=torch.cat(cond_parts, dim=1) if len(cond_parts) > 1 else cond_parts[0],
            uncond=torch.cat(uncond_parts, dim=1) if len(uncond_parts) > 1 else uncond_parts[0],
            spans=spans, pooled=pooled, negative_pooled=negative_pooled,
        )
