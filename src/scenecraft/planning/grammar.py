"""The offline planner's reader: an English prompt to objects, relations, negations and a background.

Deterministic and hand-written (no model). The prompt is lower-cased and split into words; known
multi-word phrases (relations such as "to the left of", positions such as "on the left", orderings
such as "from left to right", negations such as "without") are matched longest-first; the words
between them are noun phrases. A noun phrase is ``[count] [determiner] [modifiers...] head
[of complement]``: the modifiers (colours and other adjectives) stay bound to their own head noun.

See ``docs/planning.md`` for the grammar in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import PlanError
from .lexicon import (
    CANVAS_WORDS,
    COLLECTIVES,
    COLOURS,
    DETERMINERS,
    FILLERS,
    NOUN_ING,
    NUMBER_WORDS,
    PRONOUNS,
    SETTINGS,
    SIZE_WORDS,
    STYLE_NOUNS,
    a_or_an,
    is_plural,
    pluralize,
    singularize,
)

__all__ = ["Entity", "ParsedPrompt", "Relation", "parse_prompt", "MAX_PROMPT_CHARS", "MAX_COUNT"]

MAX_PROMPT_CHARS = 2000
#: Counts above this are clipped (LMD's number words go to twenty).
MAX_COUNT = 20

_EXACT_NUMBERS = frozenset(w for w in NUMBER_WORDS if w not in ("several", "few", "many", "multiple", "some", "numerous"))
_TOKEN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*|[,;.!?:&]")

# relation kinds: left, right, above, below, next, front, behind, between, in, at
_REL_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "on the left of", "left of", "at the left of", "on the left side of",
             "to the left side of", "on the left hand side of", "on the left-hand side of", "to the left-hand side of"),
    "right": ("to the right of", "on the right of", "right of", "at the right of", "on the right side of",
              "to the right side of", "on the right hand side of", "on the right-hand side of",
              "to the right-hand side of"),
    "above": ("above", "over", "on top of", "atop", "on", "upon", "on the top of", "sitting on", "standing on",
              "riding", "perched on", "resting on", "lying on", "placed on", "sits on", "stands on", "is on",
              "are on", "higher than", "hovering over", "flying over"),
    "below": ("below", "under", "underneath", "beneath", "at the bottom of", "on the bottom of", "lower than",
              "sitting under", "lying under"),
    "next": ("next to", "beside", "besides", "near", "by", "alongside", "close to", "adjacent to", "nearby",
             "by the side of", "accompanied by", "facing"),
    "front": ("in front of", "before"),
    "behind": ("behind", "in back of", "at the back of"),
    "between": ("between", "in between", "in the middle of", "among", "amid"),
    "in": ("in", "inside", "inside of", "within", "into"),
    "at": ("at", "during", "against", "amidst"),
}
_ABS_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "to the left", "at the left", "on the left side", "on the left hand side",
             "on the left-hand side", "in the left", "at left", "on left", "left side"),
    "right": ("on the right", "to the right", "at the right", "on the right side", "on the right hand side",
              "on the right-hand side", "in the right", "at right", "on right", "right side"),
    "top": ("on the top", "at the top", "on top", "in the top", "at top", "in the upper part", "up top"),
    "bottom": ("on the bottom", "at the bottom", "in the bottom", "at bottom", "in the lower part"),
    "center": ("in the middle", "in the center", "in the centre", "at the center", "at the centre",
               "in the middle of the image", "in the center of the image", "centered", "in the very center"),
}
_SEQ_PHRASES: dict[str, tuple[str, ...]] = {
    "h": ("from left to right", "left to right", "in a row", "in a line", "side by side", "next to each other",
          "beside each other", "next to one another", "in a horizontal row", "lined up"),
    "hr": ("from right to left", "right to left"),
    "v": ("from top to bottom", "top to bottom", "stacked on top of each other", "on top of each other",
          "one above the other", "in a column", "stacked", "in a vertical column", "on top of one another"),
    "vr": ("from bottom to top", "bottom to top"),
}
_NEG_PHRASES = ("without", "with no", "no", "not", "excluding", "without any", "but no", "and no", "nor",
                "never", "none", "lacking", "free of", "there is no", "there are no", "with none")
_CONJ_PHRASES = ("and", "with", "plus", "as well as", "along with", "together with", "&", "while", "or",
                 "holding", "wearing", "carrying", "eating", "watching", "chasing", "playing with",
                 "looking at", "and also", "then", "followed by", "containing", "including", "featuring")
_SEP = frozenset({".", ";", "!", "?"})
_CORNERS = {(v, h) for v in ("top", "bottom", "upper", "lower") for h in ("left", "right")}


def _phrase_table() -> dict[str, list[tuple[tuple[str, ...], tuple[str, str]]]]:
    table: dict[str, list[tuple[tuple[str, ...], tuple[str, str]]]] = {}

    def add(text: str, item: tuple[str, str]) -> None:
        words = tuple(_TOKEN.findall(text))
        table.setdefault(words[0], []).append((words, item))

    for kind, phrases in _REL_PHRASES.items():
        for text in phrases:
            add(text, ("rel", kind))
    for kind, phrases in _ABS_PHRASES.items():
        for text in phrases:
            add(text, ("abs", kind))
    for v, h in _CORNERS:
        vv = "top" if v in ("top", "upper") else "bottom"
        for pattern in ("in the {v} {h} corner", "at the {v} {h} corner", "in the {v} {h}", "at the {v} {h}",
                        "on the {v} {h}", "{v} {h}", "{v}-{h}", "in the {v}-{h} corner", "in the {v}-{h}",
                        "at the {v}-{h}", "on the {v}-{h}"):
            add(pattern.format(v=v, h=h), ("abs", f"{vv}-{h}"))
    for kind, phrases in _SEQ_PHRASES.items():
        for text in phrases:
            add(text, ("seq", kind))
    for text in _NEG_PHRASES:
        add(text, ("neg", ""))
    for text in _CONJ_PHRASES:
        add(text, ("conj", text))
    for words in table.values():
        words.sort(key=lambda entry: -len(entry[0]))
    return table


_TABLE = _phrase_table()


@dataclass(frozen=True)
class Entity:
    """One object kind of the prompt and how many instances of it.

    Attributes:
        head: the singular head noun ("circle").
        modifiers: the words before the head, in order ("red", "wooden").
        complement: words after the head that belong to it ("of coffee"), or "".
        count: number of instances (1..MAX_COUNT).
        negated: True for "no red square" / "without cats": goes to the negative prompt.
        abs_h, abs_v: absolute position words ("left"/"center"/"right", "top"/"center"/"bottom") or None.
        arrangement: "row" / "column" for "side by side" / "stacked", else None.
        plural_text: the plural phrase as written, if the prompt wrote one.
        explicit_count: True when the count was written ("three", "3", "a pair of"), not guessed.
    """

    head: str
    modifiers: tuple[str, ...] = ()
    complement: str = ""
    count: int = 1
    negated: bool = False
    abs_h: str | None = None
    abs_v: str | None = None
    arrangement: str | None = None
    plural_text: str | None = None
    explicit_count: bool = False

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(m for m in self.modifiers if m in COLOURS)

    @property
    def phrase(self) -> str:
        """Modifiers, head and complement without article: "red circle"."""
        return " ".join([*self.modifiers, self.head, *([self.complement] if self.complement else [])])

    @property
    def caption(self) -> str:
        """One instance as LMD writes it: "a red circle"."""
        phrase = self.phrase
        return f"{a_or_an(phrase)} {phrase}"

    @property
    def label(self) -> str:
        """The whole group: "two red circles" (or the caption for one)."""
        if self.count == 1:
            return self.caption
        words = [*self.modifiers, pluralize(self.head), *([self.complement] if self.complement else [])]
        number = next((w for w, n in NUMBER_WORDS.items() if n == self.count and w not in (
            "dozen", "single", "both", "several", "few", "many", "multiple", "some", "numerous")), str(self.count))
        return f"{number} {' '.join(words)}"


@dataclass(frozen=True)
class Relation:
    """``subject`` KIND ``obj`` between entity indices: kind is left/above/next/inside (normalised)."""

    kind: str
    subject: int
    obj: int


@dataclass(frozen=True)
class ParsedPrompt:
    """What the reader found: positive entities, relations, orderings, negations, background and style."""

    prompt: str
    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]
    sequences: tuple[tuple[str, tuple[int, ...]], ...]
    negatives: tuple[Entity, ...]
    settings: tuple[str, ...]
    style: str | None


@dataclass
class _State:
    entities: list[Entity] = field(default_factory=list)
    negatives: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    sequences: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    clause: list[int] = field(default_factory=list)
    negating: bool = False
    pending: list | None = None  # [kind, subject or None, objects list, preposition words]
    pending_abs: str | None = None
    pending_seq: str | None = None
    distributing: list | None = None  # [index of the first part, instances left, the plain entity]


def tokenize(prompt: str) -> list[str]:
    """Lower-cased words and separators of ``prompt``."""
    return _TOKEN.findall(prompt.lower())


def _strip_style(words: list[str]) -> tuple[str | None, list[str]]:
    """Remove a leading "a realistic photo of (a scene with)" and return it as the style."""
    style = None
    for end in range(min(len(words), 6)):
        if words[end] in STYLE_NOUNS and end + 1 < len(words) and words[end + 1] in (
                "of", "showing", "depicting", "featuring", "with", "containing", "where", "in"):
            if all(w not in _SEP and w != "," for w in words[:end]):
                style = " ".join(words[:end + 1])
                keep_in = words[end + 1] == "in"
                words = words[end + 1:] if keep_in else words[end + 2:]
                break
    if len(words) >= 3 and words[0] in ("a", "an", "the") and words[1] == "scene" and words[2] in (
            "with", "of", "containing", "showing", "where", "featuring"):
        words = words[3:]
        style = style or "a scene"
    return style, words


def _split_items(words: list[str]) -> list[tuple[str, object]]:
    """Words to items: ("np", [words]), ("rel", kind), ("abs", kind), ("seq", kind), ("neg", ""),
    ("conj", text), ("sep", text)."""
    items: list[tuple[str, object]] = []
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            items.append(("np", list(buffer)))
            buffer.clear()

    i = 0
    while i < len(words):
        word = words[i]
        match = None
        for phrase, item in _TABLE.get(word, ()):
            if tuple(words[i:i + len(phrase)]) == phrase:
                match = (phrase, item)
                break
        if match is not None and not _is_false_match(words, i, match[0], match[1], buffer):
            flush()
            items.append(match[1])
            i += len(match[0])
            continue
        if word in _SEP:
            flush()
            items.append(("sep", word))
        elif word in (",", ":"):
            if buffer and (buffer[-1] in COLOURS or buffer[-1] in SIZE_WORDS):
                pass  # "a big, red ball": one phrase
            else:
                flush()
                items.append(("conj", ","))
        elif _is_verb(word) and _has_head(buffer):
            flush()
            items.append(("conj", word))
        elif buffer and _starts_phrase(word) and _has_head(buffer):
            flush()
            buffer.append(word)
        else:
            buffer.append(word)
        i += 1
    flush()
    return items


def _is_false_match(words: list[str], i: int, phrase: tuple[str, ...], item: tuple[str, str],
                    buffer: list[str]) -> bool:
    """Phrases that are not meant as such in context: "no." / "no," (an answer, not a negation)."""
    return item[0] == "neg" and phrase == ("no",) and i + 1 < len(words) and words[i + 1] in (".", ",")


def _is_verb(word: str) -> bool:
    return word.endswith("ing") and len(word) > 5 and word not in NOUN_ING and word not in SETTINGS


def _starts_phrase(word: str) -> bool:
    return word in ("a", "an") or word.isdigit() or (word in NUMBER_WORDS and word not in ("some", "both"))


def _has_head(buffer: list[str]) -> bool:
    return any(w not in DETERMINERS and w not in NUMBER_WORDS and not w.isdigit() and w not in COLOURS
               for w in buffer)


def _parse_noun_phrase(words: list[str]) -> Entity | None:
    """``[count] [det] [modifiers] head [of complement]`` to an Entity, or None if only filler words."""
    words = [w for w in words if w not in FILLERS]
    count: int | None = None
    explicit = False
    i = 0
    while i < len(words):
        word = words[i]
        if word.isdigit():
            count = int(word) if len(word) <= 4 else MAX_COUNT + 1
            explicit = True
        elif word in NUMBER_WORDS:
            if word == "some" and count is not None:
                pass
            else:
                count = NUMBER_WORDS[word] if count is None or count == 1 else count
                explicit = explicit or word in _EXACT_NUMBERS
        elif word in COLLECTIVES and i + 1 < len(words) and words[i + 1] == "of":
            count = count if count not in (None, 1) else COLLECTIVES[word]
            explicit = explicit or word in ("pair", "couple", "trio")
            i += 1  # skip "of"
            if i + 1 < len(words) and (words[i + 1].isdigit() or words[i + 1] in NUMBER_WORDS):
                count = None
        elif word in ("a", "an"):
            count = 1 if count is None else count
        elif word in DETERMINERS or word == "of":
            pass
        else:
            break
        i += 1
    body = [w for w in words[i:] if w not in PRONOUNS or w == "one" and len(words[i:]) > 1]
    while body and (body[-1] in DETERMINERS or body[-1] == "of"):
        body.pop()
    while body and (body[0] in DETERMINERS or body[0] == "of"):
        body.pop(0)
    if not body or all(w in COLOURS or w in SIZE_WORDS for w in body) and len(body) < len(words[i:]):
        return None  # "two of them black": a remark about objects already named
    complement = ""
    if "of" in body[1:]:
        cut = body.index("of", 1)
        complement = " ".join(body[cut:])
        body = body[:cut]
    if body[-1] in COLOURS and any(w not in COLOURS for w in body):  # "a circle that is red"
        cut = max(k for k, w in enumerate(body) if w not in COLOURS)
        body = [w for k, w in enumerate(body) if k != cut and k < cut] + body[cut + 1:] + [body[cut]]
    head_written = body[-1]
    modifiers = tuple(body[:-1])
    plural = is_plural(head_written)
    head = singularize(head_written) if plural else head_written
    if count is None:
        count = 2 if plural else 1
    count = max(1, min(count, MAX_COUNT))
    plural_text = " ".join(words[:len(words)]) if plural else None
    return Entity(head=head, modifiers=modifiers, complement=complement, count=count, plural_text=plural_text,
                  explicit_count=explicit or count == 1 and bool(words) and words[0] in ("a", "an", "one", "single"))


def _apply_abs(entity: Entity, kind: str) -> Entity:
    from dataclasses import replace

    if "-" in kind:
        v, h = kind.split("-")
        return replace(entity, abs_v=v, abs_h=h)
    if kind in ("left", "right"):
        return replace(entity, abs_h=kind)
    if kind in ("top", "bottom"):
        return replace(entity, abs_v=kind)
    return replace(entity, abs_h="center", abs_v=entity.abs_v or "center")


def _add_relation(state: _State, kind: str, subject: int, objects: list[int]) -> None:
    if kind == "between":
        if len(objects) == 2:
            state.relations.append(Relation("left", objects[0], subject))
            state.relations.append(Relation("left", subject, objects[1]))
        elif objects:
            state.relations.append(Relation("next", subject, objects[0]))
        return
    obj = objects[0]
    if subject == obj:
        return
    normalised = {
        "left": ("left", subject, obj), "right": ("left", obj, subject), "above": ("above", subject, obj),
        "below": ("above", obj, subject), "front": ("above", obj, subject), "behind": ("above", subject, obj),
        "next": ("next", subject, obj), "in": ("inside", subject, obj), "at": ("next", subject, obj),
    }[kind]
    state.relations.append(Relation(*normalised))


def _on_entity(state: _State, entity: Entity, words: list[str]) -> None:
    from dataclasses import replace

    pending = state.pending
    is_setting = entity.head in SETTINGS and not entity.modifiers[:1] == ("no",)
    if pending is not None and pending[0] in ("in", "at", "above", "next", "below") and is_setting:
        preposition = pending[3]
        state.settings.append(f"{preposition} {' '.join(words)}".strip())
        state.pending = None
        return
    if pending is None and is_setting and not state.negating and not entity.explicit_count or (
            pending is None and is_setting and entity.count == 1 and not state.negating):
        state.settings.append(" ".join(words))  # "a beach at sunset", "a living room with two cats"
        return
    if pending is not None and entity.head in CANVAS_WORDS and pending[0] in ("left", "right", "above", "below",
                                                                              "between", "in", "at"):
        kind = {"left": "left", "right": "right", "above": "top", "below": "bottom"}.get(pending[0], "center")
        if pending[1] is not None:
            state.entities[pending[1]] = _apply_abs(state.entities[pending[1]], kind)
        state.pending = None
        return
    if pending is not None and words and all(w in PRONOUNS or w in DETERMINERS or w in ("each", "other", "another")
                                             for w in words):
        return  # handled by _on_pronoun
    if state.negating:
        written = " ".join(w for w in words if w not in DETERMINERS and w not in ("any",))
        state.negatives.append(replace(entity, negated=True, plural_text=written or entity.phrase))
        return
    if pending is not None and pending[0] == "at":
        state.settings.append(f"at {' '.join(words)}")
        state.pending = None
        return
    if state.pending_abs is not None:
        entity = _apply_abs(entity, state.pending_abs)
        state.pending_abs = None
    if _distribute(state, entity):
        return
    if pending is not None and pending[0] == "between" and not pending[2] and entity.count == 2:
        single = replace(entity, count=1)  # "between two circles": one on each side
        _on_entity(state, single, words)
        _on_entity(state, single, words)
        return
    state.entities.append(entity)
    index = len(state.entities) - 1
    state.clause.append(index)
    if pending is None:
        return
    kind, subject, objects, _ = pending
    if subject is None and objects:
        _add_relation(state, kind, index, objects)  # "above the table, a lamp"
        state.pending = None
        return
    objects.append(index)
    if subject is None:
        return
    if kind != "between" or len(objects) == 2:
        _add_relation(state, kind, subject, objects)
        state.pending = None


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Read ``prompt`` (at most MAX_PROMPT_CHARS characters). Raises PlanError on empty or huge input."""
    if not isinstance(prompt, str):
        raise PlanError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PlanError("prompt is empty; write what the picture shows, e.g. 'a red circle left of a blue square'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PlanError(f"prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    style, words = _strip_style(tokenize(prompt))
    state = _State()
    for kind, value in _split_items(words):
        if kind == "np":
            if _on_pronoun(state, value):  # type: ignore[arg-type]
                continue
            entity = _parse_noun_phrase(value)  # type: ignore[arg-type]
            if entity is not None:
                _on_entity(state, entity, value)  # type: ignore[arg-type]
        elif kind == "rel":
            subject = state.clause[-1] if state.clause else None
            if state.pending is not None and state.pending[0] == "between" and value == "next":
                continue
            preposition = _preposition_word(value)
            state.pending = [value, subject, [], preposition]
            state.negating = False
        elif kind == "abs":
            if state.clause and state.pending is None:
                last = state.clause[-1]
                state.entities[last] = _apply_abs(state.entities[last], str(value))
            else:
                state.pending_abs = str(value)
        elif kind == "seq":
            _on_sequence(state, str(value))
        elif kind == "neg":
            state.negating = True
        elif kind == "conj":
            if value not in ("or", ",", "nor"):
                state.negating = False
            if state.pending is not None and state.pending[0] != "between" and state.pending[2]:
                state.pending = None
        else:  # sep
            _close_clause(state)
            state.clause = []
            state.pending = None
            state.negating = False
    _close_clause(state)
    if state.pending_abs is not None and state.entities:
        state.entities[-1] = _apply_abs(state.entities[-1], state.pending_abs)
    return ParsedPrompt(
        prompt=prompt, entities=tuple(state.entities), relations=tuple(state.relations),
        sequences=tuple(state.sequences), negatives=tuple(state.negatives), settings=tuple(state.settings),
        style=style,
    )


def _preposition_word(kind: str) -> str:
    return {"in": "in", "at": "at", "above": "on", "next": "near", "below": "under"}.get(kind, "")


def _on_sequence(state: _State, kind: str) -> None:
    from dataclasses import replace

    members = tuple(state.clause)
    if not members:
        state.pending_seq = kind  # "from left to right: a cat, a dog and a bird"
        return
    if len(members) == 1:
        index = members[0]
        state.entities[index] = replace(state.entities[index], arrangement="row" if kind in ("h", "hr") else "column")
        return
    if len(members) >= 2:
        state.sequences.append((kind, members))


def _close_clause(state: _State) -> None:
    if state.pending_seq is not None:
        kind, state.pending_seq = state.pending_seq, None
        if state.clause:
            _on_sequence(state, kind)


def _on_pronoun(state: _State, words: list[str]) -> bool:
    """"a laptop below them": the pending relation's object is every earlier entity of the clause."""
    if not words or not all(w in PRONOUNS for w in words) or state.pending is None:
        return False
    kind, subject, objects, _ = state.pending
    if subject is None or kind == "between":
        return False
    earlier = [i for i in state.clause if i != subject] if words[-1] in ("them", "they", "those", "these", "both",
                                                                         "others") else [
        i for i in state.clause if i != subject][-1:]
    for index in earlier:
        _add_relation(state, kind, subject, [index])
    state.pending = None
    return True


def _distribute(state: _State, entity: Entity) -> bool:
    """"two circles, one red and one blue": colour-only phrases split the last plain group."""
    from dataclasses import replace

    if entity.head not in COLOURS or entity.modifiers or not state.clause:
        return False
    base_index = state.clause[-1]
    base = state.entities[base_index]
    origin = state.distributing if state.distributing and state.distributing[0] in state.clause else None
    if origin is None:
        if base.count < 2 or base.colours or base.head in COLOURS:
            return False
        origin = state.distributing = [base_index, base.count, base]
        if entity.count >= base.count:
            return False
        state.entities[base_index] = replace(base, modifiers=(entity.head, *base.modifiers), count=entity.count,
                                             plural_text=None)
        origin[1] -= entity.count
        return True
    _, remaining, plain = origin
    if remaining <= 0:
        return False
    count = min(entity.count, remaining)
    origin[1] -= count
    state.entities.append(replace(plain, modifiers=(entity.head, *plain.modifiers), count=count, plural_text=None))
    state.clause.append(len(state.entities) - 1)
    return True
