"""Convert OpenAI CLIP's BPE file into HuggingFace ``vocab.json`` + ``merges.txt`` (run once).

    python scripts/convert_clip_vocab.py ../shared/data/bpe_simple_vocab_16e6.txt.gz src/scenecraft/assets/clip_tokenizer
"""

import gzip
import json
import sys
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> list[str]:
    """GPT-2's table: the 256 byte values mapped to printable unicode characters, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    # CLIP orders the base vocabulary as the printable bytes first, then the remapped ones.
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


def main(source: str, target: str) -> None:
    lines = gzip.open(source, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + NUM_MERGES]]
    base = bytes_to_unicode()
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    config = {
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
