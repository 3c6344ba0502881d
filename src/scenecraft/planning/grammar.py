"""The offline planner's reader: an English prompt to objects, relations, negations and a background.

Deterministic and hand-written (no model). The prompt is lower-cased and split into words; known
multi-word phrases (relations such as "to the left of", positions such as "on the left", orderings
such as "from left to right", negations such as "without") are matched longest-first; the words
between them are noun phrases. A noun phrase is ``[count] [determiner] [modifiers...] head
[of complement]``: the modifiers (colours and other adjectives) stay bound to their own head noun.

Above the noun phrase, the reader knows a few clause forms: exclusivity ("only", "by itself",
"and nothing else") names no object and ends a negation ("no cats, only a dog"); a list after a
colon, dash or parenthesis (after a comma only for a category noun: "three animals, a cat, ...")
spells out the counted noun before it; a phrase of attributes after a noun ("both blue", "two of
them black", "the rest white") describes its instances; nouns plural in form ("scissors") are one
object, a pair. Readings chosen where the prompt is ambiguous go to ``ParsedPrompt.notes``; what
cannot be drawn raises :class:`PlanReadError` quoting the words.

The README's "The offline planner's grammar" gives the grammar in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import PlanError, PlanReadError
from .lexicon import (
    CANVAS_WORDS,
    CATEGORY_NOUNS,
    COLLECTIVES,
    COLOURS,
    DETERMINERS,
    DRINK_WORDS,
    FILLERS,
    MASS_PLURALS,
    NOUN_ING,
    NUMBER_WORDS,
    PAIR_NOUNS,
    PRONOUNS,
    SETTINGS,
    SIZE_WORDS,
    STYLE_NOUNS,
    a_or_an,
    is_plural,
    pluralize,
    singularize,
)

__all__ = ["Entity", "ParsedPrompt", "Relation", "parse_prompt", "read_noun_phrase", "tokenize", "MAX_PROMPT_CHARS",
           "MAX_COUNT"]

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
             "by the side of", "accompanied by", "facing", "around"),
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
                "never", "none", "lacking", "free of", "there is no", "there are no", "with none", "instead of",
                "rather than", "in place of", "except", "except for")
_CONJ_PHRASES = ("and", "with", "plus", "as well as", "along with", "together with", "&", "while", "or",
                 "holding", "wearing", "carrying", "eating", "watching", "chasing", "playing with",
                 "looking at", "and also", "then", "followed by", "containing", "including", "featuring",
                 "but", "yet", "but also")
#: Exclusivity before a noun phrase: "only a dog". It names no object and ends a negation's scope
#: ("no cats, only a dog": the dog is drawn).
_ONLY_PHRASES = ("only", "just", "merely", "solely", "simply", "exactly", "precisely", "instead",
                 "nothing but", "none but", "nothing except", "nothing other than", "but only", "but just",
                 "but rather", "but instead")
#: Exclusivity that stands for "no other object": "a cat by itself", "a tree and nothing more".
_ALONE_PHRASES = ("alone", "all alone", "by itself", "all by itself", "by themselves", "all by themselves",
                  "by himself", "by herself", "on its own", "on their own", "on his own", "on her own",
                  "all on its own", "all on their own", "solo", "nothing", "nothing else", "nothing more",
                  "nobody", "nobody else", "no one else", "no others", "that's it", "that is it",
                  "that's all", "that is all", "and that's it", "and that's all", "and that is all",
                  "in total", "in all", "altogether", "all together", "total")
#: Words that, like a colon, say the list that follows spells out the noun before: "three animals, namely ...".
_COLON_PHRASES = (":", "namely", "specifically", "to be specific", "in particular")
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
    for kind, phrases in (("only", _ONLY_PHRASES), ("alone", _ALONE_PHRASES), ("colon", _COLON_PHRASES)):
        for text in phrases:
            add(text, (kind, text))
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
        """One instance as LMD writes it: "a red circle", "a pair of scissors", "clothes"."""
        phrase = self.phrase
        if self.head in PAIR_NOUNS:
            return f"a pair of {phrase}"
        if self.head in MASS_PLURALS:
            return phrase
        return f"{a_or_an(phrase)} {phrase}"

    @property
    def label(self) -> str:
        """The whole group: "two red circles" (or the caption for one)."""
        if self.count == 1 or self.head in MASS_PLURALS:
            return self.caption
        words = [*self.modifiers, pluralize(self.head), *([self.complement] if self.complement else [])]
        if self.head in PAIR_NOUNS:
            words = ["pairs", "of", *words]
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
    notes: tuple[str, ...] = ()


@dataclass
class _Category:
    """A counted noun that the list after it spells out: "three animals: a cat, a dog and a horse".

    The first listed object takes the category's index (so relations stated before the colon stay
    attached); ``relations_before`` marks those relations, which the other members then share.
    """

    index: int
    entity: Entity
    relations_before: int
    members: list[int] = field(default_factory=list)


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
    category: _Category | None = None
    notes: list[str] = field(default_factory=list)
    previous: str = ""  # the last item: a conjunction's or colon's text, else the item's kind
    alone: bool = False  # after "nothing else", until the next noun phrase


_DASH = re.compile(r"\s[-\u2013\u2014]+\s|[\u2013\u2014(]")


def tokenize(prompt: str) -> list[str]:
    """Lower-cased words and separators of ``prompt``; a dash between words or an opening
    parenthesis reads as a colon ("three animals (a cat, a dog and a horse)")."""
    return _TOKEN.findall(_DASH.sub(" : ", prompt.lower()))


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
            if buffer and (buffer[-1] in COLOURS or buffer[-1] in SIZE_WORDS) and not _starts_part(words, i + 1):
                pass  # "a big, red ball": one phrase ("one red, one blue": two)
            else:
                flush()
                items.append(("conj", ","))
        elif _is_verb(word) and _has_head(buffer):
            flush()
            items.append(("conj", word))
        elif word in ("is", "are") and buffer and singularize(buffer[-1]) in CATEGORY_NOUNS:
            flush()
            items.append(("colon", word))  # "the only object is a cup", "the animals are a cat and a dog"
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


def _starts_part(words: list[str], i: int) -> bool:
    """Whether ``words[i]`` starts a new phrase after a comma: "one red, one blue", "red, the rest blue"."""
    return i < len(words) and (_starts_phrase(words[i]) or words[i] in ("the", "all", "both", "each", "every"))


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
    pair = False  # the count came from "a pair of": for "scissors" the pair is the one object
    i = 0
    while i < len(words):
        word = words[i]
        if word.isdecimal():  # not isdigit: "²" is a digit that int() refuses
            count = int(word) if len(word) <= 4 else MAX_COUNT + 1
            explicit = True
        elif word in NUMBER_WORDS:
            if word == "some" and count is not None:
                pass
            else:
                count = NUMBER_WORDS[word] if count is None or count == 1 else count
                explicit = explicit or word in _EXACT_NUMBERS
        elif word in COLLECTIVES and i + 1 < len(words) and words[i + 1] == "of":
            pair = word == "pair" and count in (None, 1)
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
    head, plural = _head(head_written, modifiers, complement, count, pair)
    if head in PAIR_NOUNS and pair or head in MASS_PLURALS:
        count = 1
    if count is None:
        count = 2 if plural else 1
    count = max(1, min(count, MAX_COUNT))
    plural_text = " ".join(words[:len(words)]) if plural else None
    return Entity(head=head, modifiers=modifiers, complement=complement, count=count, plural_text=plural_text,
                  explicit_count=explicit or count == 1 and bool(words) and words[0] in ("a", "an", "one", "single"))


def read_noun_phrase(words: list[str]) -> Entity | None:
    """One noun phrase's words (lower-cased, as :func:`tokenize` gives them) to an :class:`Entity`, or
    None if they are only filler words: "two red birds" is ``Entity("bird", ("red",), count=2)``."""
    return _parse_noun_phrase(words)


def _head(written: str, modifiers: tuple[str, ...], complement: str, count: int | None,
          pair: bool) -> tuple[str, bool]:
    """The singular head noun and whether it was written as a plural ("scissors" is one object)."""
    if written == "glasses" and _drinking_glasses(modifiers, complement, count, pair):
        return "glass", True
    plural = is_plural(written)
    return (singularize(written) if plural else written), plural


def _drinking_glasses(modifiers: tuple[str, ...], complement: str, count: int | None, pair: bool) -> bool:
    """Whether "glasses" means drinking glasses (a count noun), not eyewear: "two glasses", "wine
    glasses", "glasses of water"; "a pair of glasses" and a bare "glasses" are eyewear."""
    if pair:
        return False
    return bool(complement) or any(m in DRINK_WORDS for m in modifiers) or count is not None and count >= 2


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
        if pending[1] is not None and not state.alone:  # "nothing else in the picture" places nothing
            state.entities[pending[1]] = _apply_abs(state.entities[pending[1]], kind)
        state.pending = None
        return
    if pending is not None and words and all(w in PRONOUNS or w in DETERMINERS or w in ("each", "other", "another")
                                             for w in words):
        return  # handled by _on_pronoun
    if state.negating:
        written = " ".join(w for w in words if w not in DETERMINERS and w not in _COUNT_WORDS and not w.isdigit())
        state.negatives.append(replace(entity, negated=True, plural_text=written or entity.phrase))
        return
    if pending is not None and pending[0] == "at":
        state.settings.append(f"at {' '.join(words)}")
        state.pending = None
        return
    if state.pending_abs is not None:
        entity = _apply_abs(entity, state.pending_abs)
        state.pending_abs = None
    if pending is not None and pending[0] == "between" and not pending[2] and entity.count == 2:
        single = replace(entity, count=1)  # "between two circles": one on each side
        _on_entity(state, single, words)
        _on_entity(state, single, words)
        return
    index = _place_entity(state, entity)
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
    """Read ``prompt`` (at most MAX_PROMPT_CHARS characters).

    Raises PlanError on empty or huge input, PlanReadError (naming the words) where the prompt
    says something the reader cannot make sense of ("two circles, three red").
    """
    _check_prompt(prompt)
    style, words = _strip_style(tokenize(prompt))
    state = _State()
    for kind, value in _split_items(words):
        _HANDLERS[kind](state, value)
        state.previous = str(value) if kind in ("conj", "colon") else kind
    _close_clause(state)
    if state.pending_abs is not None and state.entities:
        state.entities[-1] = _apply_abs(state.entities[-1], state.pending_abs)
    _check_contradictions(state)
    return ParsedPrompt(
        prompt=prompt, entities=tuple(state.entities), relations=tuple(state.relations),
        sequences=tuple(state.sequences), negatives=tuple(state.negatives), settings=tuple(state.settings),
        style=style, notes=tuple(dict.fromkeys(state.notes)),
    )


def _check_prompt(prompt: object) -> None:
    if not isinstance(prompt, str):
        raise PlanError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PlanError("prompt is empty; write what the picture shows, e.g. 'a red circle left of a blue square'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PlanError(f"prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed")


def _on_noun_phrase(state: _State, words: list[str]) -> None:
    if _on_pronoun(state, words) or _on_attributes(state, words):
        return
    entity = _parse_noun_phrase(words)
    if entity is not None and not _is_summary(state, entity):
        _note_reading(state, entity, words)
        _on_entity(state, entity, words)
    state.alone = False


def _on_relation(state: _State, kind: str) -> None:
    if state.pending is not None and state.pending[0] == "between" and kind == "next":
        return
    subject = state.clause[-1] if state.clause else None
    state.pending = [kind, subject, [], _preposition_word(kind)]
    state.negating = False


def _on_absolute(state: _State, kind: str) -> None:
    if state.clause and state.pending is None:
        last = state.clause[-1]
        state.entities[last] = _apply_abs(state.entities[last], kind)
    else:
        state.pending_abs = kind


def _on_negation(state: _State, _: str) -> None:
    state.negating = True


def _on_conjunction(state: _State, text: str) -> None:
    if text not in ("or", ",", "nor"):
        state.negating = False
    if state.pending is not None and state.pending[0] != "between" and state.pending[2]:
        state.pending = None
    if text == ",":
        _open_category(state, colon=False)


def _on_colon(state: _State, _: str) -> None:
    """"three animals: a cat, a dog and a horse": the list spells out the counted noun."""
    _on_conjunction(state, ":")
    _open_category(state, colon=True)


def _on_only(state: _State, _: str) -> None:
    """"only", "just", "exactly": no object of their own; they end a negation ("no cats, only a dog")."""
    state.negating = False


def _on_alone(state: _State, _: str) -> None:
    """"by itself", "nothing else": they say no other object is drawn, which the plan already does."""
    state.alone = True


def _on_separator(state: _State, _: str) -> None:
    state.alone = False
    _close_clause(state)
    state.clause = []
    state.pending = None
    state.negating = False


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
    _close_distribution(state)
    _close_category(state)
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


def _place_entity(state: _State, entity: Entity) -> int:
    """Add ``entity`` to the clause; the first object listed after a category takes its place."""
    category = state.category
    if category is not None and not category.members and state.pending is not None:
        category = state.category = None  # "the thing is on a table": a relation, not a list
    if category is not None and not category.members:
        state.entities[category.index] = entity
        index = category.index
    else:
        state.entities.append(entity)
        index = len(state.entities) - 1
        state.clause.append(index)
    if category is not None:
        category.members.append(index)
    return index


# ----------------------------------------------------------------- a counted category and its list
def _open_category(state: _State, *, colon: bool) -> None:
    """Remember the noun a following list may spell out: after a colon the latest counted or
    category noun of the clause ("three things on a table: ..."), after a comma only a category noun
    ("three animals, a cat, a dog and a horse")."""
    if state.category is not None or state.negating or state.pending is not None or not state.clause:
        return
    candidates = [i for i in state.clause if state.entities[i].head in CATEGORY_NOUNS or colon and (
        state.entities[i].count >= 2)]
    if not candidates or not colon and candidates[-1] != state.clause[-1]:
        return
    index = candidates[-1]
    if state.distributing is not None and state.distributing[0] == index:
        return
    state.category = _Category(index, state.entities[index], len(state.relations))


def _close_category(state: _State) -> None:
    """The listed objects inherit the category's attributes, position and relations; a count that
    disagrees with the list is noted (the list wins)."""
    from dataclasses import replace

    category, state.category = state.category, None
    if category is None or not category.members:
        return
    members, named = category.members, category.entity
    for i in members:
        state.entities[i] = _inherit(state.entities[i], named)
    for rel in state.relations[:category.relations_before]:
        for i in members[1:]:
            state.relations.append(replace(rel, subject=i if rel.subject == category.index else rel.subject,
                                            obj=i if rel.obj == category.index else rel.obj))
    if named.arrangement is not None and len(members) > 1:
        state.sequences.append(("h" if named.arrangement == "row" else "v", tuple(members)))
    total = sum(state.entities[i].count for i in members)
    if named.explicit_count and total != named.count:
        listed = ", ".join(state.entities[i].label for i in members)
        state.notes.append(f"'{named.label}' is followed by a list of {total} ({listed}): drew the list")


def _is_summary(state: _State, entity: Entity) -> bool:
    """"a cat, a dog and a horse: three animals": a count of the objects just listed names no new
    object (after a comma only when the numbers agree); a count that disagrees is noted."""
    after_colon = state.previous in _COLON_PHRASES or state.previous in ("is", "are")
    if entity.head not in CATEGORY_NOUNS or entity.count < 2 or not entity.explicit_count or state.category or (
            state.negating or not (after_colon or state.previous == ",") or len(state.clause) < 2):
        return False
    total = sum(state.entities[i].count for i in state.clause)
    if total != entity.count:
        if not after_colon:
            return False
        state.notes.append(f"'{entity.label}' sums up a list of {total}: drew the list")
    return True


def _inherit(member: Entity, category: Entity) -> Entity:
    """``member`` with the category's modifiers ("three red things: ...") and absolute position."""
    from dataclasses import replace

    own_colour = bool(member.colours)
    shared = tuple(m for m in category.modifiers if m not in member.modifiers and not (own_colour and m in COLOURS))
    return replace(member, modifiers=(*shared, *member.modifiers), abs_h=member.abs_h or category.abs_h,
                   abs_v=member.abs_v or category.abs_v)


# ----------------------------------------------------------------- attributes after the noun
_UNIVERSAL = frozenset({"all", "both", "each", "every"})
_REST = frozenset({"other", "others", "rest", "remaining"})
_SKIPPED = frozenset({"the", "of", "them", "these", "those", "ones", "which", "whom"})
_COUNT_WORDS = frozenset(NUMBER_WORDS) | {"single"}
ALL, REST = -1, -2  # quantities of an attribute phrase: every instance, the instances not yet described


def _read_attributes(words: list[str]) -> tuple[int | None, tuple[str, ...]] | None:
    """A phrase that only describes objects already named: "both blue" -> (ALL, ("blue",)), "one red"
    -> (1, ("red",)), "the others white" -> (REST, ("white",)), "blue" -> (None, ("blue",)); else None."""
    words = [w for w in words if w not in FILLERS or w in _UNIVERSAL]
    quantity: int | None = None
    i = 0
    while i < len(words) and (words[i] in _UNIVERSAL or words[i] in _REST or words[i] in _SKIPPED
                              or words[i] in ("a", "an") or _exact_number(words[i]) is not None):
        quantity = _quantity(words[i], quantity)
        i += 1
    attrs = words[i:]
    while attrs and attrs[-1] in ("one", "ones"):
        attrs.pop()
    if not attrs or not _are_attributes(attrs, universal=quantity == ALL):
        return None
    return quantity, tuple(attrs)


def _exact_number(word: str) -> int | None:
    if word.isdecimal():
        return int(word) if len(word) <= 4 else MAX_COUNT + 1
    return NUMBER_WORDS[word] if word in _EXACT_NUMBERS and word not in ("both", "dozen") else None


def _quantity(word: str, quantity: int | None) -> int | None:
    """The quantity after reading ``word``; a universal word wins over a number ("each one", "all three")."""
    if word in _UNIVERSAL:
        return ALL
    if quantity is not None:
        return quantity
    if word in _REST:
        return REST
    if word in ("a", "an"):
        return 1
    return _exact_number(word)


def _are_attributes(words: list[str], *, universal: bool) -> bool:
    """Colours and sizes always; after "both"/"all"/"each" any adjective ("both empty"), but not a noun
    phrase ("all the cats")."""
    if all(w in COLOURS or w in SIZE_WORDS for w in words):
        return True
    blocked = DETERMINERS | PRONOUNS | SETTINGS | _COUNT_WORDS
    return universal and not any(w in blocked for w in words) and not is_plural(words[-1])


def _on_attributes(state: _State, words: list[str]) -> bool:
    """"two cups, both blue", "three birds, all black", "two circles, one red and one blue"."""
    reading = _read_attributes(words)
    if reading is None or state.negating:
        return False
    quantity, attrs = reading
    if not state.clause and state.pending is None and words[-1] in ("one", "ones") and state.negatives:
        _on_entity(state, _elided(state.negatives[-1], quantity, attrs, words[-1]), words)
        return True
    if not state.clause or state.pending is not None:
        if quantity == ALL:
            phrase = " ".join(words)
            raise PlanReadError(f"'{phrase}' describes objects, but no object is named before it; name it "
                                f"first, e.g. 'two cups, {phrase}'", phrase)
        return False
    if quantity is None and state.distributing is None or quantity == ALL:
        _share(state, state.clause[-1], attrs)
        return True
    return _distribute(state, quantity, attrs, " ".join(words))


def _elided(negated: Entity, quantity: int | None, attrs: tuple[str, ...], pronoun: str) -> Entity:
    """"no red apples, only green ones": the excluded noun with the new attributes."""
    from dataclasses import replace

    count = quantity if quantity is not None and quantity > 0 else 2 if pronoun == "ones" else 1
    kept = tuple(m for m in negated.modifiers if m not in COLOURS and m not in SIZE_WORDS and m not in ("no", "any"))
    return replace(negated, modifiers=(*attrs, *kept), count=min(count, MAX_COUNT), negated=False, plural_text=None,
                   explicit_count=quantity is not None and quantity > 0)


def _share(state: _State, index: int, attrs: tuple[str, ...]) -> None:
    """Every instance of entity ``index`` takes ``attrs`` (sizes first, then colours, then the rest)."""
    from dataclasses import replace

    entity = state.entities[index]
    new = tuple(a for a in attrs if a not in entity.modifiers)
    ordered = sorted((*entity.modifiers, *new), key=lambda m: 0 if m in SIZE_WORDS else 1 if m in COLOURS else 2)
    state.entities[index] = replace(entity, modifiers=tuple(ordered), plural_text=None)


def _distribute(state: _State, quantity: int | None, attrs: tuple[str, ...], phrase: str) -> bool:
    """"two circles, one red and one blue": each counted part takes its attributes; instances left
    undescribed at the end of the clause stay plain."""
    from dataclasses import replace

    origin = state.distributing if state.distributing and state.distributing[0] in state.clause else None
    if origin is None:
        base_index = state.clause[-1]
        base = state.entities[base_index]
        if quantity in (None, REST) or quantity >= base.count:
            _share_or_fail(state, base_index, quantity, attrs, phrase)
            return True
        state.distributing = [base_index, base.count - quantity, base]
        state.entities[base_index] = replace(base, count=quantity, plural_text=None)
        _share(state, base_index, attrs)
        return True
    _, remaining, plain = origin
    if quantity is None:
        _share(state, state.clause[-1], attrs)  # "one big and red"
        return True
    count = remaining if quantity == REST else quantity
    if count > remaining or remaining == 0:
        raise PlanReadError(f"'{phrase}' describes {count} more {pluralize(plain.head)} than the {plain.count} "
                            f"named", phrase)
    origin[1] -= count
    state.entities.append(replace(plain, count=count, plural_text=None))
    state.clause.append(len(state.entities) - 1)
    _share(state, len(state.entities) - 1, attrs)
    return True


def _share_or_fail(state: _State, index: int, quantity: int | None, attrs: tuple[str, ...], phrase: str) -> None:
    entity = state.entities[index]
    if quantity is not None and quantity > entity.count:
        raise PlanReadError(f"'{phrase}' describes {quantity} of the {entity.count} {entity.head}"
                            f"{'' if entity.count == 1 else 's'} named", phrase)
    _share(state, index, attrs)


def _close_distribution(state: _State) -> None:
    """Instances a distribution left undescribed ("three squares, one green") are drawn plain."""
    from dataclasses import replace

    origin, state.distributing = state.distributing, None
    if origin is None or origin[1] <= 0:
        return
    base_index, remaining, plain = origin
    state.entities.append(replace(plain, count=remaining, plural_text=None))
    index = len(state.entities) - 1
    state.clause.append(index)
    for rel in [r for r in state.relations if base_index in (r.subject, r.obj)]:
        state.relations.append(replace(rel, subject=index if rel.subject == base_index else rel.subject,
                                       obj=index if rel.obj == base_index else rel.obj))


# ----------------------------------------------------------------- readings worth a note, contradictions
def _note_reading(state: _State, entity: Entity, words: list[str]) -> None:
    """Record the reading chosen for an ambiguous word."""
    if entity.head == "glasses" and not entity.modifiers and "pair" not in words and not state.negating:
        state.notes.append("'glasses' read as eyeglasses (one pair); write 'two glasses of water' or 'wine "
                           "glasses' for drinking glasses")


def _check_contradictions(state: _State) -> None:
    """"a cat and no cat": the same object asked for and excluded cannot be drawn."""
    for negative in state.negatives:
        if negative.explicit_count or "other" in negative.modifiers:
            continue  # "not one cat but two cats", "a cat and no other cats"
        wanted = set(negative.modifiers) - {"no", "any"}
        for entity in state.entities:
            if entity.head == negative.head and set(entity.modifiers) == wanted:
                excluded = negative.plural_text or negative.phrase
                raise PlanReadError(f"the prompt asks for '{entity.phrase}' and also excludes '{excluded}'; say "
                                    "which one the picture shows", excluded)


_HANDLERS = {
    "np": _on_noun_phrase, "rel": _on_relation, "abs": _on_absolute, "seq": _on_sequence, "neg": _on_negation,
    "conj": _on_conjunction, "colon": _on_colon, "only": _on_only, "alone": _on_alone, "sep": _on_separator,
}
