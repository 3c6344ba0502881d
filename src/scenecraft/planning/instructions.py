"""The offline planner for edits: a follow-up instruction in plain English, with the current Scene, to edits.

Deterministic and hand-written, like the prompt reader (:mod:`.grammar`, whose tokenizer and noun
phrases it reuses). An instruction is one or more clauses ("make the circle blue and move the
square to the left"), each a verb form of :data:`FORMS`. Objects are named as in the prompt ("the
red circle", "the circles", "the left square", "the dog on the right", "it", "r2") and matched
against the regions' prompts by head noun (singular or plural) and modifiers; a reference that
fits more than one region where one is meant is an :class:`InstructionError` naming the
candidates. Later clauses see what earlier ones did ("add a star and make it yellow").

What it cannot read is an :class:`InstructionError` (a :class:`PlanError`) saying what it did not
understand and listing the forms it knows; an LLM planner (``plan_edit(..., llm=...)``) reads the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

from ..scene import Box, Region, Scene, SceneError
from ..scene.edits import (
    GAP,
    MIN_SHRINK,
    PLACES,
    AddRegion,
    ChangeAttribute,
    Edit,
    EditHistory,
    MoveRegion,
    RemoveRegion,
    ReplacePrompt,
    ResizeRegion,
    SetCount,
    SwapRegions,
    Undo,
    apply_edits,
    diff_scenes,
    free_box,
    matching_regions,
    region_rect,
    typical_size,
)
from ..scene.words import COLOURS, MATERIALS, SIZES, pluralize
from .errors import PlanError
from .grammar import MAX_PROMPT_CHARS, read_noun_phrase, tokenize
from .lexicon import CANVAS_WORDS, NUMBER_WORDS, singularize

__all__ = ["FORMS", "InstructionError", "NeedsBoxes", "check_instruction", "is_undo", "parse_instruction"]

#: The instruction forms the offline planner reads (X, Y: objects of the scene; N: a number).
FORMS = (
    "make the X <colour> / <material> / bigger / smaller / twice as big / a Y",
    "change the X to <colour> / to a <colour> one / into a Y; change the colour of the X to <colour>",
    "move the X to the left / right / top / bottom / center / top right; move the X left / up / a bit down",
    "move the X to the left of / right of / above / below / next to the Y",
    "make the X bigger / smaller; enlarge / shrink the X",
    "add [N] X [on the left / at the top right / to the left of the Y / above the Y]",
    "remove / delete / get rid of the X (or the Xs: all of them)",
    "replace the X with a Y",
    "swap the X and the Y",
    "make it N Xs; there should be N Xs (N may be 0 or no)",
    "undo",
)

_UNDO = {("undo",), ("undo", "that"), ("undo", "it"), ("undo", "this"), ("go", "back"), ("revert",),
         ("revert", "that"), ("step", "back"), ("take", "that", "back"), ("undo", "the", "last", "edit"),
         ("undo", "the", "last", "change"), ("undo", "the", "last", "step"), ("undo", "last"),
         ("revert", "the", "last", "change"), ("go", "back", "one", "step")}
_LEADING = (("please",), ("can", "you"), ("could", "you"), ("would", "you"), ("will", "you"), ("now",), ("ok",),
            ("okay",), ("also",), ("then",), ("and",), ("i", "want", "you", "to"), ("i'd", "like", "you", "to"),
            ("i", "would", "like", "you", "to"), ("let's",), ("lets",), ("go", "ahead", "and"), ("just",), ("so",),
            ("next",), ("finally",), ("oh",), ("hey",), ("well",), ("ah",))
_TRAILING = (("please",), ("thanks",), ("thank", "you"), ("now",), ("too",), ("as", "well"), ("instead",),
             ("for", "me"))
_ADD = {"add", "insert", "include", "draw", "create", "put", "place", "introduce"}
_REMOVE = {"remove", "delete", "erase", "drop", "eliminate", "hide", "discard"}
_REMOVE_PHRASES = (("get", "rid", "of"), ("take", "away"), ("take", "out"), ("do", "away", "with"))
_MOVE = {"move", "shift", "drag", "push", "slide", "bring", "put", "place", "relocate", "reposition", "nudge"}
_SWAP = {"swap", "switch", "exchange", "interchange"}
_RESIZE = {"enlarge": 1.25, "grow": 1.25, "expand": 1.25, "magnify": 1.25, "shrink": 0.8, "double": 2.0,
           "halve": 0.5, "increase": 1.25, "reduce": 0.8, "decrease": 0.8, "scale": 1.25, "resize": 1.25}
_MAKE = {"make", "turn", "paint", "colour", "color", "recolour", "recolor", "change", "set", "render", "dye"}
_VERBS = _ADD | _REMOVE | _MOVE | _SWAP | set(_RESIZE) | _MAKE | {"replace", "undo", "get", "take", "there"}
_DETERMINERS = {"the", "this", "that", "these", "those", "all", "both", "every", "each", "my", "of", "any"}
_MANY = {"these", "those", "all", "both", "every", "each"}
_IT = {("it",), ("that",), ("this",), ("that", "one"), ("this", "one"), ("the", "same", "one"), ("the", "new", "one")}
_THEM = {("them",), ("they",), ("those",), ("these",), ("all", "of", "them"), ("both", "of", "them"), ("them", "all"),
         ("the", "new", "ones")}
_EVERYTHING = {("everything",), ("all",), ("all", "objects"), ("all", "the", "objects"), ("every", "object"),
               ("all", "of", "them"), ("all", "things"), ("all", "the", "things"), ("all", "regions")}
_WILDCARD_HEADS = {"one", "ones", "thing", "object", "shape", "item", "region", "element"}
_POSITION_WORDS = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right", "top": "top",
                   "upper": "top", "topmost": "top", "uppermost": "top", "highest": "top", "bottom": "bottom",
                   "lower": "bottom", "bottommost": "bottom", "lowest": "bottom", "middle": "center",
                   "central": "center", "center": "center", "centre": "center"}
_SHADES = {"light", "dark", "bright", "pale", "deep", "pastel", "neon"}
_SIDE_WORDS = {"left": "left", "right": "right", "top": "top", "up": "top", "upper": "top", "bottom": "bottom",
               "down": "bottom", "lower": "bottom", "middle": "center", "center": "center", "centre": "center"}
_PLACE_PREFIXES = (("all", "the", "way", "to", "the"), ("to", "the"), ("on", "the"), ("at", "the"), ("in", "the"),
                   ("into", "the"), ("towards", "the"), ("toward", "the"), ("over", "to", "the"), ("to",), ("on",),
                   ("at",), ("in",), ("into",))
_PLACE_SUFFIXES = (("corner",), ("side",), ("hand", "side"), ("edge",), ("part",), ("half",), ("area",))
_DIRECTIONS = {"left": (-1, 0), "leftward": (-1, 0), "leftwards": (-1, 0), "right": (1, 0), "rightward": (1, 0),
               "rightwards": (1, 0), "up": (0, -1), "upward": (0, -1), "upwards": (0, -1), "higher": (0, -1),
               "down": (0, 1), "downward": (0, 1), "downwards": (0, 1), "lower": (0, 1)}
_DEGREES = {("a", "bit"): 0.1, ("a", "little"): 0.1, ("a", "little", "bit"): 0.1, ("slightly",): 0.1,
            ("a", "tad"): 0.1, ("just", "a", "bit"): 0.1, ("a", "touch"): 0.1, ("far",): 0.35, ("much",): 0.35,
            ("a", "lot"): 0.35, ("way",): 0.35, ("further",): 0.2, ("more",): 0.2, ("farther",): 0.2}
_STEP = 0.2  # a move "left" with no degree
_VAGUE = {"some", "several", "few", "many", "multiple", "numerous", "dozen", "both", "single"}  # no count to set
_RELATIONS = {
    ("to", "the", "left", "of"): "left_of", ("left", "of"): "left_of", ("on", "the", "left", "of"): "left_of",
    ("on", "the", "left", "side", "of"): "left_of", ("to", "the", "left", "side", "of"): "left_of",
    ("to", "the", "right", "of"): "right_of", ("right", "of"): "right_of", ("on", "the", "right", "of"): "right_of",
    ("on", "the", "right", "side", "of"): "right_of", ("to", "the", "right", "side", "of"): "right_of",
    ("above",): "above", ("over",): "above", ("on", "top", "of"): "above", ("on",): "above", ("onto",): "above",
    ("atop",): "above", ("higher", "than"): "above",
    ("below",): "below", ("under",): "below", ("underneath",): "below", ("beneath",): "below",
    ("lower", "than"): "below",
    ("next", "to"): "next", ("beside",): "next", ("near",): "next", ("by",): "next", ("close", "to"): "next",
    ("alongside",): "next",
}
_SCALES = {("bigger",): 1.25, ("larger",): 1.25, ("big",): 1.25, ("large",): 1.25, ("huge",): 1.6,
           ("enormous",): 1.6, ("giant",): 1.6, ("smaller",): 0.8, ("small",): 0.8, ("little",): 0.8,
           ("tiny",): 0.6, ("tinier",): 0.6, ("twice", "as", "big"): 2.0, ("twice", "as", "large"): 2.0,
           ("twice", "the", "size"): 2.0, ("double", "the", "size"): 2.0, ("double", "its", "size"): 2.0,
           ("twice", "its", "size"): 2.0, ("half", "as", "big"): 0.5, ("half", "as", "large"): 0.5,
           ("half", "the", "size"): 0.5, ("half", "its", "size"): 0.5, ("three", "times", "as", "big"): 3.0,
           ("three", "times", "bigger"): 3.0, ("two", "times", "bigger"): 2.0, ("two", "times", "as", "big"): 2.0,
           ("twice", "bigger"): 2.0, ("twice", "larger"): 2.0}
_SCALE_DEGREES = {("much",): 1.6, ("a", "lot"): 1.6, ("far",): 1.6, ("way",): 1.6, ("even",): 1.0,
                  ("a", "bit"): 0.5, ("a", "little"): 0.5, ("slightly",): 0.5, ("a", "little", "bit"): 0.5,
                  ("somewhat",): 0.5, ("a", "tad"): 0.5}


class InstructionError(PlanError):
    """An instruction the offline planner cannot turn into edits: the message says what it did not
    understand (and, for an ambiguous object, ``candidates``: the ids it could mean)."""

    def __init__(self, message: str, *, candidates: tuple[str, ...] = ()) -> None:
        self.candidates = tuple(candidates)
        super().__init__(message)


class NeedsBoxes(PlanError):
    """The instruction adds, removes, moves or resizes regions of a split scene: plan it on boxes
    (:func:`~scenecraft.scene.edits.cells_to_boxes`); :func:`scenecraft.planning.plan_edit` does."""


def _unknown(text: str, what: str) -> InstructionError:
    return InstructionError(f"cannot read the instruction {text!r}: {what}. The offline planner knows: "
                            + "; ".join(FORMS) + ". Pass llm=... (--llm) for anything else")


def _words(instruction: Any) -> list[str]:
    if not isinstance(instruction, str):
        raise InstructionError(f"an instruction must be a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise InstructionError("the instruction is empty; say what to change, e.g. 'make the circle blue'")
    if len(instruction) > MAX_PROMPT_CHARS:
        raise InstructionError(f"the instruction has {len(instruction)} characters; at most {MAX_PROMPT_CHARS} "
                               "are allowed")
    return _trim(tokenize(instruction))


def _trim(words: list[str]) -> list[str]:
    """``words`` without politeness and punctuation around them ("please", "can you", a final ".")."""
    changed = True
    while changed and words:
        changed = False
        while words and words[-1] in (".", "!", "?", ",", ";"):
            words, changed = words[:-1], True
        for phrase in _LEADING:
            if tuple(words[:len(phrase)]) == phrase and len(words) > len(phrase):
                words, changed = words[len(phrase):], True
        for phrase in _TRAILING:
            if tuple(words[-len(phrase):]) == phrase and len(words) > len(phrase):
                words, changed = words[:-len(phrase)], True
    return words


def check_instruction(instruction: Any) -> str:
    """``instruction`` if it is a non-empty string of at most 2000 characters, else an InstructionError."""
    _words(instruction)
    return instruction


def is_undo(instruction: str) -> bool:
    """Whether ``instruction`` asks to undo the last round ("undo", "undo that", "go back", "revert")."""
    try:
        return tuple(_words(instruction)) in _UNDO
    except InstructionError:
        return False


def _clauses(words: list[str]) -> list[list[str]]:
    """Clauses split at sentence ends, and at "and" / "," / "then" before a verb ("... and move the square ...")."""
    clauses, current = [], []
    k = 0
    while k < len(words):
        word = words[k]
        if word in (".", ";", "!", "?"):
            clauses.append(current)
            current = []
        elif word in ("and", ",", "then") and current:
            j = k + 1
            while j < len(words) and words[j] in ("and", ",", "then", "also", "please"):
                j += 1
            if j < len(words) and words[j] in _VERBS and not (words[j] == "there" and words[j - 1] == ","):
                clauses.append(current)
                current, k = [], j
                continue
            current.append(word)
        else:
            current.append(word)
        k += 1
    clauses.append(current)
    return [_trim(c) for c in clauses if _trim(c)]


@dataclass
class _Context:
    """The scene as edited by the clauses so far, the ids seen, and what "it" refers to."""

    scene: Scene
    history: EditHistory | None
    taken: set[str]
    last: tuple[str, ...] = ()
    text: str = ""
    edits: list[Edit] = field(default_factory=list)

    def new_id(self) -> str:
        numbers = [int(i[1:]) for i in self.taken | {r.id for r in self.scene.regions}
                   if re.fullmatch(r"r[0-9]{1,9}", i)]
        region_id = f"r{max(numbers, default=0) + 1}"
        self.taken.add(region_id)
        return region_id


def parse_instruction(instruction: str, scene: Scene, *, history: EditHistory | None = None) -> tuple[Edit, ...]:
    """The edits ``instruction`` asks of ``scene`` (given ids first, :meth:`Scene.with_ids`).

    Args:
        instruction: one or more clauses of :data:`FORMS` (at most 2000 characters).
        scene: the current scene; objects are matched against its regions' prompts.
        history: the rounds so far: "it" may mean what the last round added or changed, and ids a
            removed region had are not given again.

    Returns:
        the edits (``(Undo(),)`` for "undo"), which :func:`~scenecraft.scene.edits.apply_edits`
        applies to ``scene`` (with ``taken=history.ids_seen()``).

    Raises:
        InstructionError: what it did not understand, or which regions an ambiguous object could be.
        NeedsBoxes: the instruction adds, removes, moves or resizes regions of a split scene.
    """
    words = _words(instruction)
    if tuple(words) in _UNDO:
        return (Undo(),)
    if not isinstance(scene, Scene):
        raise InstructionError(f"parse_instruction needs the current Scene, got {type(scene).__name__}")
    taken = history.ids_seen() if history is not None else set()
    context = _Context(scene=scene.with_ids(), history=history, taken=set(taken), text=instruction.strip())
    context.last = _last_touched(history, context.scene)
    clauses = _clauses(words)
    if not clauses:
        raise _unknown(instruction.strip(), "it holds no words to act on")
    for clause in clauses:
        if tuple(clause) in _UNDO:
            raise InstructionError(f"'undo' must be an instruction of its own, not part of {instruction.strip()!r}")
        try:
            edits = _clause(clause, context)
        except SceneError as error:  # an edit the words make that no scene takes
            raise InstructionError(f"cannot {' '.join(clause)!r}: {error}") from error
        _apply(context, edits, clause)
    return tuple(context.edits)


def _last_touched(history: EditHistory | None, scene: Scene) -> tuple[str, ...]:
    """The ids the history's last round added or changed that are still in ``scene``: what "it" means."""
    if history is None or len(history.rounds) < 2:
        return ()
    diff = diff_scenes(history.rounds[-2].scene, history.rounds[-1].scene)
    present = {r.id for r in scene.regions}
    return tuple(i for i in (*diff.added, *diff.changed) if i in present)


def _apply(context: _Context, edits: list[Edit], clause: list[str]) -> None:
    """Apply one clause's edits to the context's scene, so that the next clause sees them."""
    try:
        result = apply_edits(context.scene, edits, taken=context.taken)
    except SceneError as error:
        if context.scene.split is not None and "split" in str(error):
            raise NeedsBoxes(f"{' '.join(clause)!r} changes the regions of a split scene ({context.scene.split!r}); "
                             "plan it on boxes (scene.edits.cells_to_boxes; plan_edit does this)") from error
        raise InstructionError(f"cannot {' '.join(clause)!r} here: {error}") from error
    context.scene = result.scene
    context.taken |= {r.id for r in result.scene.regions}
    context.last = (*result.diff.added, *result.diff.changed) or context.last
    context.edits += edits


def _clause(words: list[str], context: _Context) -> list[Edit]:
    """One clause to edits; the first form that reads it wins."""
    for reader in (_read_remove, _read_count, _read_swap, _read_replace, _read_add, _read_move, _read_resize,
                   _read_make, _read_should_be):
        edits = reader(words, context)
        if edits is not None:
            return edits
    return _raise_unknown(words, context)


def _raise_unknown(words: list[str], context: _Context) -> list[Edit]:
    clause = " ".join(words)
    if words and words[0] not in _VERBS:
        raise _unknown(context.text, f"{clause!r} does not start with a verb it knows ({words[0]!r})")
    raise _unknown(context.text, f"it did not understand {clause!r}")


def _starts(words: list[str], phrase: tuple[str, ...]) -> bool:
    return tuple(words[:len(phrase)]) == phrase


def _split_at(words: list[str], separators: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
    """``words`` cut at the last of ``separators`` (a single word) with words on both sides."""
    for k in range(len(words) - 2, 0, -1):
        if words[k] in separators:
            return words[:k], words[k + 1:]
    return None


# ----------------------------------------------------------------- naming objects
def _listing(scene: Scene, indices: list[int] | None = None, limit: int = 12) -> str:
    indices = list(range(len(scene.regions))) if indices is None else indices
    shown = [f"{scene.regions[k].id} {scene.regions[k].prompt[:60]!r} ({_where(scene, k)})" for k in indices[:limit]]
    return ", ".join(shown) + (", ..." if len(indices) > limit else "") if shown else "no regions"


def _where(scene: Scene, index: int) -> str:
    x0, y0, x1, y1 = region_rect(scene, scene.regions[index])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    v = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    return f"{v} {h}".strip() or "middle"


def _region_words(region: Region) -> set[str]:
    return {w.replace("grey", "gray") for w in re.findall(r"[^\W_]+(?:['\-][^\W_]+)*", region.prompt.lower())}


def _matches(scene: Scene, head: str, modifiers: tuple[str, ...]) -> list[int]:
    """Regions whose prompt names ``head`` (singular or plural; "one", "object"... name any) and holds every
    modifier; if none holds them all, those that hold every colour, size and material word of them."""
    heads = None if head in _WILDCARD_HEADS else {head, pluralize(head), singularize(head)}
    modifiers = tuple(m.replace("grey", "gray") for m in modifiers)
    found = [k for k, r in enumerate(scene.regions) if heads is None or _region_words(r) & heads]
    strict = [k for k in found if all(m in _region_words(scene.regions[k]) for m in modifiers)]
    if strict or not modifiers:
        return strict
    attributes = [m for m in modifiers if m in COLOURS | SIZES | MATERIALS | _SHADES or m == "gray"]
    return [k for k in found if attributes and all(m in _region_words(scene.regions[k]) for m in attributes)]


def _position_suffix(words: list[str]) -> tuple[list[str], str | None]:
    """"the circle on the left" -> (["the", "circle"], "left"); "... in the top right corner" -> "top-right"."""
    for cut in range(len(words) - 1, 0, -1):
        if words[cut] in ("on", "at", "in", "to") and (place := _place(words[cut:], need_prefix=True)) is not None:
            return words[:cut], place
    return words, None


def _pick(scene: Scene, indices: list[int], place: str) -> list[int]:
    """The one region of ``indices`` furthest toward ``place`` (for "center": the nearest the middle)."""
    def key(k: int) -> float:
        x0, y0, x1, y1 = region_rect(scene, scene.regions[k])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        tx, ty = PLACES[place]
        if place == "center":
            return (cx - 0.5) ** 2 + (cy - 0.5) ** 2
        return (0 if tx is None else (cx if tx < 0.5 else -cx)) + (0 if ty is None else (cy if ty < 0.5 else -cy))
    return [min(indices, key=lambda k: (key(k), k))]


def _side(scene: Scene, indices: list[int], place: str) -> list[int]:
    """The regions of ``indices`` on the ``place`` half of the canvas."""
    tx, ty = PLACES[place]
    kept = []
    for k in indices:
        x0, y0, x1, y1 = region_rect(scene, scene.regions[k])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if place == "center":
            keep = abs(cx - 0.5) < 0.2 and abs(cy - 0.5) < 0.2
        else:
            keep = (tx is None or (cx < 0.5) == (tx < 0.5)) and (ty is None or (cy < 0.5) == (ty < 0.5))
        if keep:
            kept.append(k)
    return kept


def _refer(words: list[str], context: _Context, *, many: bool = False) -> list[int]:
    """The regions ``words`` name ("the red circle", "the circles", "it", "r2", "the circle and the square").

    A singular name must fit exactly one region (a place picks among several: "the left circle"); a
    plural one ("the circles", "all squares", "both cats") names every region it fits. ``many``: a
    singular name may also fit several (a swap's "X and Y" is read by the caller)."""
    scene = context.scene
    text = " ".join(words)
    if not words:
        raise _unknown(context.text, "it names no object")
    if tuple(words) in _EVERYTHING:
        if not scene.regions:
            raise InstructionError("the scene has no regions")
        return list(range(len(scene.regions)))
    if tuple(words) in _IT | _THEM:
        return _pronoun(words, context)
    ids = {r.id.lower(): k for k, r in enumerate(scene.regions)}
    if len(words) == 1 and words[0] in ids:
        return [ids[words[0]]]
    try:
        return _refer_one(words, context, many=many)
    except InstructionError:
        parts = _list_parts(words)
        if len(parts) < 2:
            raise
    found: list[int] = []
    for part in parts:
        found += [k for k in _refer(part, context) if k not in found]
    if not found:
        raise InstructionError(f"no region matches {text!r}; the scene has {_listing(scene)}")
    return found


def _list_parts(words: list[str]) -> list[list[str]]:
    parts, current = [], []
    for word in words:
        if word in ("and", ",", "&"):
            if current:
                parts.append(current)
            current = []
        else:
            current.append(word)
    if current:
        parts.append(current)
    return parts


def _pronoun(words: list[str], context: _Context) -> list[int]:
    scene = context.scene
    index = {r.id: k for k, r in enumerate(scene.regions)}
    last = [index[i] for i in context.last if i in index]
    if tuple(words) in _THEM:
        if last:
            return last
        if scene.regions:
            return list(range(len(scene.regions)))
    elif len(last) == 1:
        return last
    elif len(scene.regions) == 1:
        return [0]
    candidates = last or list(range(len(scene.regions)))
    raise InstructionError(f"{' '.join(words)!r} could mean any of {_listing(scene, candidates)}; name the object "
                           "(e.g. 'the red circle') or its id",
                           candidates=tuple(scene.regions[k].id for k in candidates))


def _refer_one(words: list[str], context: _Context, *, many: bool) -> list[int]:
    scene = context.scene
    text = " ".join(words)
    body, place = _position_suffix(words)
    plural_det = any(w in _MANY for w in body[:2])
    while body and body[0] in _DETERMINERS:
        body = body[1:]
    leading = 0  # "the left circle", "the top right one"
    while leading < len(body) - 1 and body[leading] in _POSITION_WORDS and leading < 2:
        leading += 1
    if leading and place is None:
        place = _place([_POSITION_WORDS[w] for w in body[:leading]], need_prefix=False)
        if place is None:
            raise _unknown(context.text, f"{text!r} names a place it cannot read")
        body = body[leading:]
    entity = read_noun_phrase(body) if body else None
    if entity is None:
        if body in (["one"], ["ones"]) or (not body and place is not None):
            entity_head, modifiers, plural, count = "one", (), body == ["ones"], None
        else:
            raise _unknown(context.text, f"{text!r} names no object it can find")
    else:
        entity_head, modifiers = entity.head, entity.modifiers
        plural = entity.plural_text is not None or entity.count > 1 or plural_det
        count = entity.count if entity.explicit_count and entity.count > 1 else None
    found = _matches(scene, entity_head, tuple(modifiers))
    sizes = [m for m in modifiers if m in _BIG | _SMALL]
    if not found and sizes:  # "the big circle" where no prompt says big: the largest circle
        found = _matches(scene, entity_head, tuple(m for m in modifiers if m not in sizes))
        if found and not plural:
            return [_by_area(scene, found, biggest=sizes[0] in _BIG)]
    if not found:
        raise InstructionError(f"no region matches {text!r}; the scene has {_listing(scene)}")
    if plural:
        chosen = _side(scene, found, place) if place is not None else found
        if count is not None and len(chosen) != count:
            raise InstructionError(f"{text!r} names {count} regions but {len(chosen)} match: {_listing(scene, chosen)}",
                                   candidates=tuple(scene.regions[k].id for k in chosen))
        if not chosen:
            raise InstructionError(f"no region matches {text!r}; the scene has {_listing(scene)}")
        return chosen
    if place is not None:
        return _pick(scene, found, place)
    if len(found) == 1 or many:
        return found
    raise InstructionError(f"{text!r} could be {len(found)} regions: {_listing(scene, found)}; say which one, by its "
                           f"colour or place ('the left {entity_head}', 'the {entity_head} at the top') or by id "
                           f"('{scene.regions[found[0]].id}')", candidates=tuple(scene.regions[k].id for k in found))


_BIG = {"big", "bigger", "biggest", "large", "larger", "largest", "huge", "giant"}
_SMALL = {"small", "smaller", "smallest", "little", "tiny", "tinier", "tiniest"}


def _by_area(scene: Scene, indices: list[int], *, biggest: bool) -> int:
    def area(k: int) -> float:
        x0, y0, x1, y1 = region_rect(scene, scene.regions[k])
        return (x1 - x0) * (y1 - y0)
    return max(indices, key=lambda k: (area(k), -k)) if biggest else min(indices, key=lambda k: (area(k), k))


def _ids(context: _Context, indices: list[int]) -> list[str]:
    return [context.scene.regions[k].id for k in indices]


# ----------------------------------------------------------------- places, directions, relations
def _place(words: list[str], *, need_prefix: bool = False) -> str | None:
    """A place of :data:`~scenecraft.scene.edits.PLACES` that ``words`` name in full ("to the left", "at the
    top right corner", "in the middle of the image"), else None. Without a prefix only a corner counts
    ("top right") unless ``need_prefix`` is False and the words are one side word."""
    rest = list(words)
    prefixed = False
    for prefix in _PLACE_PREFIXES:
        if _starts(rest, prefix) and len(rest) > len(prefix):
            rest, prefixed = rest[len(prefix):], True
            break
    if len(rest) >= 3 and rest[-2] in ("the",) and rest[-1] in CANVAS_WORDS and rest[-3] == "of":
        rest = rest[:-3]  # "... of the image"
    for suffix in _PLACE_SUFFIXES:
        if tuple(rest[-len(suffix):]) == suffix and len(rest) > len(suffix):
            rest = rest[:-len(suffix)]
            break
    parts = [p for w in rest for p in w.split("-")]
    sides = [_SIDE_WORDS.get(p) for p in parts]
    if not parts or None in sides or len(parts) > 2:
        return None
    if len(parts) == 2:
        vertical = [s for s in sides if s in ("top", "bottom")]
        horizontal = [s for s in sides if s in ("left", "right")]
        if len(vertical) == 1 and len(horizontal) == 1:
            return f"{vertical[0]}-{horizontal[0]}"
        return None
    if not prefixed and (need_prefix or parts[0] in ("up", "down")):
        return None
    return sides[0] if parts[0] not in ("up", "down") or prefixed else None


def _degree(words: list[str], table: dict[tuple[str, ...], float]) -> tuple[list[str], float | None]:
    """``words`` without a degree phrase at either end ("a bit", "much"), and that degree."""
    for phrase, value in sorted(table.items(), key=lambda item: -len(item[0])):
        n = len(phrase)
        if tuple(words[:n]) == phrase and len(words) > n:
            return words[n:], value
        if tuple(words[-n:]) == phrase and len(words) > n:
            return words[:-n], value
    return words, None


def _destination(words: list[str]) -> tuple[str, Any] | None:
    """Where a move goes: ("relation", (kind, object words)), ("place", name), ("delta", (dx, dy)) or None."""
    for phrase, kind in sorted(_RELATIONS.items(), key=lambda item: -len(item[0])):
        if _starts(words, phrase) and len(words) > len(phrase):
            rest = words[len(phrase):]
            if _place(rest, need_prefix=False) is None and rest[0] not in ("the", "a") or _looks_like_object(rest):
                return ("relation", (kind, rest))
    rest, degree = _degree(words, _DEGREES)
    if len(rest) == 1 and rest[0] in _DIRECTIONS:
        dx, dy = _DIRECTIONS[rest[0]]
        step = degree or _STEP
        return ("delta", (dx * step, dy * step))
    place = _place(rest)
    if place is None:
        return None
    if degree is not None and place in ("left", "right", "top", "bottom"):
        dx, dy = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}[place]
        return ("delta", (dx * degree, dy * degree))
    return ("place", place)


def _looks_like_object(words: list[str]) -> bool:
    """Whether ``words`` after a relation word name an object ("the square"), not a place ("the left")."""
    return _place(words, need_prefix=False) is None and _place(["to", *words]) is None


# ----------------------------------------------------------------- the forms
def _read_remove(words: list[str], context: _Context) -> list[Edit] | None:
    rest = None
    if words[0] in _REMOVE:
        rest = words[1:]
    for phrase in _REMOVE_PHRASES:
        if _starts(words, phrase):
            rest = words[len(phrase):]
    if words[0] == "take" and words[-1] in ("away", "out", "off") and len(words) > 2:
        rest = words[1:-1]
    if rest is None:
        return None
    if rest and rest[-1] in ("too", "also", "completely", "entirely"):
        rest = rest[:-1]
    if rest and (rest[0] in ("a", "an") or rest[0].isdecimal() or rest[0] in NUMBER_WORDS and rest[0] not in _VAGUE) \
            and len(rest) > 1:
        return _remove_some(rest, context)  # "remove two circles": any two of them
    return [RemoveRegion(i) for i in _ids(context, _refer(rest, context))]


def _remove_some(words: list[str], context: _Context) -> list[Edit]:
    counted = _counted(["one", *words[1:]] if words[0] in ("a", "an") else words)
    if counted is None:
        raise _unknown(context.text, f"it did not understand what to remove: {' '.join(words)!r}")
    kind, count, _ = counted
    existing = len(matching_regions(context.scene, kind))
    if count > existing:
        raise InstructionError(f"cannot remove {count} of {kind!r}: the scene has {existing} "
                               f"({_listing(context.scene)})")
    return [SetCount(kind, existing - count)]


def _counted(words: list[str]) -> tuple[str, int, str] | None:
    """"three red circles" -> ("red circle", 3, "a red circle"); "no squares" -> ("square", 0, "a square")."""
    words = [w for w in words if w not in ("only", "exactly", "just", "precisely")]
    if not words:
        return None
    first = words[0]
    if first in ("no", "zero", "0"):
        entity = read_noun_phrase(words[1:]) if len(words) > 1 else None
        count = 0
    elif first.isdecimal() or first in NUMBER_WORDS and first not in _VAGUE:
        entity = read_noun_phrase(words)
        count = entity.count if entity is not None else None
        if first.isdecimal() and len(first) > 6:
            raise InstructionError(f"the count {first[:12]}... is far past what a scene can hold")
        if first.isdecimal():
            count = int(first)
    else:
        return None
    if entity is None or count is None or entity.head in _WILDCARD_HEADS or not _is_word(entity.head):
        return None
    kind = " ".join([*entity.modifiers, entity.head])
    return kind, count, entity.caption


def _is_word(word: str) -> bool:
    return re.fullmatch(r"[^\W\d_]+(?:['\-][^\W\d_]+)*", word) is not None


def _count_edits(counted: tuple[str, int, str], context: _Context) -> list[Edit]:
    kind, count, caption = counted
    existing = matching_regions(context.scene, kind)
    return [SetCount(kind, count, prompt=None if existing else caption)]


def _read_count(words: list[str], context: _Context) -> list[Edit] | None:
    for phrase in (("there", "should", "be"), ("there", "must", "be"), ("there", "need", "to", "be"),
                   ("there", "should", "only", "be"), ("there", "are"), ("i", "want"), ("i'd", "like"),
                   ("i", "would", "like"), ("let", "there", "be"), ("give", "me"), ("make", "it"), ("make", "that"),
                   ("make", "them"), ("make", "this"), ("change", "it", "to"), ("change", "that", "to"),
                   ("we", "need"), ("i", "need"), ("use",), ("show",)):
        if _starts(words, phrase) and len(words) > len(phrase):
            counted = _counted(words[len(phrase):])
            if counted is not None:
                return _count_edits(counted, context)
    for verb in ("change", "set"):  # "change the number of circles to three"
        if _starts(words, (verb, "the", "number", "of")) or _starts(words, (verb, "the", "count", "of")):
            cut = _split_at(words[4:], ("to",))
            if cut is not None:
                counted = _counted([*cut[1], *cut[0]])
                if counted is not None:
                    return _count_edits(counted, context)
    counted = _counted(words)  # "three circles instead"
    return _count_edits(counted, context) if counted is not None and words[0] not in _VERBS else None


def _read_swap(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] not in _SWAP or "for" in words:
        return None
    rest = words[1:]
    for phrase in (("the", "positions", "of"), ("the", "places", "of"), ("places", "of"), ("positions", "of"),
                   ("places", "between"), ("the", "position", "of"), ("places", "with")):
        if _starts(rest, phrase):
            rest = rest[len(phrase):]
    if rest and rest[-1] in ("around", "places", "over", "positions", "round"):
        rest = rest[:-1]
    cut = _split_at(rest, ("and", "with"))
    if cut is None:
        raise _unknown(context.text, "a swap names two objects: 'swap the circle and the square'")
    first, second = (_refer(part, context) for part in cut)
    if len(first) != 1 or len(second) != 1:
        raise InstructionError("a swap exchanges two objects, one on each side of 'and': "
                               f"{' '.join(cut[0])!r} names {len(first)}, {' '.join(cut[1])!r} {len(second)}")
    a, b = _ids(context, first + second)
    if a == b:
        raise InstructionError(f"{' '.join(cut[0])!r} and {' '.join(cut[1])!r} are the same region ({a})")
    return [SwapRegions(a, b)]


def _new_prompt(words: list[str], context: _Context, targets: list[int]) -> list[Edit] | None:
    """"a cat" (or "cats" for several) as each target's new prompt; None if the words name no object."""
    entity = read_noun_phrase(words)
    if entity is None or entity.head in _WILDCARD_HEADS or words[0] in COLOURS or not _is_word(entity.head):
        return None
    if entity.count > 1 and len(targets) == 1 and entity.explicit_count:
        raise InstructionError(f"{' '.join(words)!r} is {entity.count} objects; replace one object with one (then "
                               f"'add' more, or say 'make it {entity.label}')")
    return [ReplacePrompt(i, entity.caption) for i in _ids(context, targets)]


def _read_replace(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] == "replace":
        cut = _split_at(words[1:], ("with", "by"))
    elif words[0] in _SWAP | {"trade"} and "for" in words:
        cut = _split_at(words[1:], ("for",))
    else:
        return None
    if cut is None:
        raise _unknown(context.text, "say what to put in its place: 'replace the dog with a cat'")
    targets = _refer(cut[0], context)
    edits = _new_prompt(cut[1], context, targets)
    if edits is None:
        raise _unknown(context.text, f"{' '.join(cut[1])!r} names no object to put in place of {' '.join(cut[0])!r}")
    return edits


def _read_add(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] not in _ADD or len(words) < 2:
        return None
    rest = words[1:]
    if words[0] in ("put", "place") and not (rest[0] in ("a", "an", "another", "some", "more") or rest[0].isdecimal()
                                             or rest[0] in NUMBER_WORDS):
        return None  # "put the apple on the left" is a move
    phrase, where = _split_destination(rest, context, reference=False)
    if where is not None and where[0] == "delta":
        return None
    items = _list_parts(phrase) if "and" in phrase or "," in phrase else [phrase]
    edits: list[Edit] = []
    for item in items:
        edits += _add_one(item, where, context, edits)
    return edits


def _split_destination(words: list[str], context: _Context, *,
                       reference: bool) -> tuple[list[str], tuple[str, Any] | None]:
    """``words`` cut into (object words, where they go) at the first cut where the tail reads as a
    destination whose object (after "left of", "above"...) is in the scene, and, with ``reference``, the
    head names objects of the scene too. Where no cut works, the first error found is raised (an
    ambiguous object, say); with none, ``(words, None)``."""
    first_error: InstructionError | None = None
    for cut in range(1, len(words)):
        where = _destination(words[cut:])
        if where is None:
            continue
        try:
            if where[0] == "relation":
                _refer(where[1][1], context)
            if reference:
                _refer(words[:cut], context)
        except InstructionError as error:
            first_error = first_error or error
            continue
        return words[:cut], where
    if first_error is not None:
        raise first_error
    return words, None


def _add_one(words: list[str], where: tuple[str, Any] | None, context: _Context, earlier: list[Edit]) -> list[Edit]:
    another = bool(words) and words[0] in ("another", "more")
    entity = read_noun_phrase([w for w in words if w not in ("another", "more", "new", "extra")])
    if entity is None or entity.head in _WILDCARD_HEADS or not _is_word(entity.head):
        raise _unknown(context.text, f"{' '.join(words)!r} names no object to add")
    scene = context.scene
    kind = " ".join([*entity.modifiers, entity.head])
    like = matching_regions(scene, kind) or matching_regions(scene, entity.head)
    prompt = scene.regions[like[0]].prompt if another and like and not entity.modifiers else entity.caption
    size = typical_size(scene, like)
    rects = [region_rect(scene, r) for r in scene.regions] + [e.box.as_list() for e in earlier
                                                              if isinstance(e, AddRegion)]
    count = entity.count if not (another and words[0] == "more" and not entity.explicit_count) else 2
    edits: list[Edit] = []
    for _ in range(count):
        zone, near, fitted = _zone(where, size, context)
        box = free_box(rects, fitted, zone=zone, near=near)
        rects.append(box.as_list())
        edits.append(AddRegion(prompt, box, id=context.new_id()))
    return edits


_Zone = tuple[tuple[float, float, float, float], Union[tuple[float, float], None], tuple[float, float]]


def _zone(where: tuple[str, Any] | None, size: tuple[float, float], context: _Context) -> _Zone:
    """Where a new object's centre may go (zone), the point it is drawn to, and its size (shrunk beside
    another object where room is short)."""
    if where is None:
        return (0.0, 0.0, 1.0, 1.0), None, size
    kind, value = where
    if kind == "place":
        zones = {"left": (0, 0, .5, 1), "right": (.5, 0, 1, 1), "top": (0, 0, 1, .5), "bottom": (0, .5, 1, 1),
                 "center": (.3, .3, .7, .7), "top-left": (0, 0, .5, .5), "top-right": (.5, 0, 1, .5),
                 "bottom-left": (0, .5, .5, 1), "bottom-right": (.5, .5, 1, 1)}
        tx, ty = PLACES[value]
        return zones[value], (0.5 if tx is None else tx, 0.5 if ty is None else ty), size
    relation, object_words = value
    targets = _refer(object_words, context)
    if len(targets) != 1:
        raise InstructionError(f"{' '.join(object_words)!r} names {len(targets)} objects; put a new one next to one")
    x0, y0, x1, y1 = region_rect(context.scene, context.scene.regions[targets[0]])
    kinds = ("right_of", "left_of") if relation == "next" else (relation,)
    errors = []
    for kind in kinds:
        room = {"left_of": x0, "right_of": 1 - x1, "above": y0, "below": 1 - y1}[kind] - GAP
        need = size[0] if kind in ("left_of", "right_of") else size[1]
        shrink = min(1.0, room / need)
        if shrink < MIN_SHRINK:
            errors.append(f"{max(room, 0):.2f} of the canvas is free {kind.replace('_', ' ')} it")
            continue
        w, h = size[0] * shrink, size[1] * shrink
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if kind == "left_of":
            return (0.0, y0, x0 - GAP - w / 2, y1), (x0 - GAP - w / 2, cy), (w, h)
        if kind == "right_of":
            return (x1 + GAP + w / 2, y0, 1.0, y1), (x1 + GAP + w / 2, cy), (w, h)
        if kind == "above":
            return (x0, 0.0, x1, y0 - GAP - h / 2), (cx, y0 - GAP - h / 2), (w, h)
        return (x0, y1 + GAP + h / 2, x1, 1.0), (cx, y1 + GAP + h / 2), (w, h)
    raise InstructionError(f"there is no room next to {' '.join(object_words)!r} for a new object: "
                           + "; ".join(errors))


def _read_move(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] not in _MOVE or len(words) < 3:
        return None
    rest = words[1:]
    target_words, where = _split_destination(rest, context, reference=True)
    if where is None:
        if words[0] in ("put", "place"):
            return None
        raise _unknown(context.text, f"it did not understand where to move {' '.join(rest)!r} (to the left, up, "
                                     "to the top right, left of the square, ...)")
    targets = _refer(target_words, context)
    return _move_edits(targets, where, context)


def _move_edits(targets: list[int], where: tuple[str, Any], context: _Context) -> list[Edit]:
    scene = context.scene
    kind, value = where
    if kind == "relation":
        relation, object_words = value
        others = _refer(object_words, context)
        if len(others) != 1:
            raise InstructionError(f"{' '.join(object_words)!r} names {len(others)} objects; move next to one")
        other = scene.regions[others[0]].id
        if any(scene.regions[k].id == other for k in targets):
            raise InstructionError(f"cannot move {' '.join(object_words)!r} {relation.replace('_', ' ')} itself")
        if relation != "next":
            return _moves(targets, context, relation=relation, of=other)
        errors = []
        for option in ("right_of", "left_of"):
            try:
                edits = _moves(targets, context, relation=option, of=other)
                apply_edits(scene, edits, taken=context.taken)
                return edits
            except (SceneError, InstructionError) as error:
                errors.append(str(error))
        raise InstructionError(f"cannot move next to {' '.join(object_words)!r}: " + " | ".join(errors))
    if kind == "place":
        return _moves(targets, context, place=value)
    dx, dy = value
    return [MoveRegion(i, dx=dx or None, dy=dy or None) for i in _ids(context, targets)]


def _moves(targets: list[int], context: _Context, **how: Any) -> list[Edit]:
    """One move for one region; for several, the same shift for each (the group keeps its shape)."""
    scene = context.scene
    if len(targets) == 1:
        region_id = scene.regions[targets[0]].id
        if "place" in how:
            return [_place_move(scene, targets[0], how["place"])]
        return [MoveRegion(region_id, **how)]
    rects = [region_rect(scene, scene.regions[k]) for k in targets]
    group = (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))
    probe = "group-probe"
    while any(r.id == probe for r in scene.regions):
        probe += "-x"
    trial = Scene(prompt="probe", regions=[*(r for k, r in enumerate(scene.regions) if k not in targets),
                                           Region("probe", Box(*group), id=probe)])
    index = len(trial.regions) - 1
    edit = _place_move(trial, index, how["place"]) if "place" in how else MoveRegion(probe, **how)
    try:
        moved = apply_edits(trial, [edit]).scene.regions[index].geometry
    except SceneError as error:
        raise InstructionError(f"cannot move these objects together: {error}") from error
    dx, dy = round(moved.x0 - group[0], 6), round(moved.y0 - group[1], 6)
    return [MoveRegion(i, dx=dx or None, dy=dy or None) for i in _ids(context, targets)] if dx or dy else []


def _place_move(scene: Scene, index: int, place: str) -> MoveRegion:
    """To ``place``; a region already there (the move would not go that way) is shifted a step further."""
    region = scene.regions[index]
    x0, y0, x1, y1 = region_rect(scene, region)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    tx, ty = PLACES[place]
    if place in ("left", "right", "top", "bottom"):
        sign = -1 if place in ("left", "top") else 1
        current, target = (cx, tx) if tx is not None else (cy, ty)
        if (target - current) * sign < 0.05:
            return MoveRegion(region.id, dx=sign * _STEP) if tx is not None else MoveRegion(region.id, dy=sign * _STEP)
    return MoveRegion(region.id, place=place)


def _scale(words: list[str]) -> float | None:
    """"bigger" -> 1.25, "much smaller" -> 0.64, "twice as big" -> 2, "a bit bigger" -> 1.125; else None."""
    rest, degree = _degree(words, _SCALE_DEGREES)
    factor = _SCALES.get(tuple(rest))
    if factor is None and len(rest) >= 3 and rest[1] == "times" and _number(rest[0]) is not None:
        times = _number(rest[0])  # "3 times bigger", "two times as large", "4 times smaller"
        grows = {("bigger",): True, ("larger",): True, ("as", "big"): True, ("as", "large"): True,
                 ("smaller",): False, ("as", "small"): False}.get(tuple(rest[2:]))
        factor = None if grows is None else times if grows else 1 / times
        degree = None
    if factor is None:
        return None
    if degree is not None and factor not in (2.0, 3.0, 0.5):
        factor = factor ** degree
    return round(factor, 6)


def _read_resize(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] not in _RESIZE:
        return None
    factor = _RESIZE[words[0]]
    rest = words[1:]
    for phrase in (("the", "size", "of"), ("the", "scale", "of")):
        if _starts(rest, phrase):
            rest = rest[len(phrase):]
    if rest[-1:] in (["up"], ["down"]):
        factor = 1.25 if rest[-1] == "up" else 0.8
        rest = rest[:-1]
    rest, degree = _degree(rest, _SCALE_DEGREES)
    cut = _split_at(rest, ("by",))
    if cut is not None and len(cut[1]) == 1 and _number(cut[1][0]) is not None:
        rest, factor = cut[0], _number(cut[1][0])
        if words[0] in ("shrink", "reduce", "decrease") and factor > 1:
            factor = 1 / factor
    elif degree is not None and factor not in (2.0, 0.5):
        factor = factor ** degree
    if not rest:
        return None
    return [ResizeRegion(i, scale=round(factor, 6)) for i in _ids(context, _refer(rest, context))]


def _number(word: str) -> float | None:
    if re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,3})?", word):
        value = float(word)
        return value if 0 < value <= 10 else None
    return {"two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0, "half": 0.5, "double": 2.0, "twice": 2.0}.get(word)


def _values(words: list[str], targets: list[int], context: _Context) -> list[Edit] | None:
    """What "make the X ..." asks: colours, materials, sizes, "a Y" / "a green one"; None if not that."""
    items = _list_parts(words)
    edits: list[Edit] = []
    for item in items:
        found = _value(item, targets, context)
        if found is None:
            return None
        edits += found
    return edits or None


def _value(words: list[str], targets: list[int], context: _Context) -> list[Edit] | None:
    ids = _ids(context, targets)
    factor = _scale(words)
    if factor is not None:
        return [ResizeRegion(i, scale=factor) for i in ids]
    colour = _colour(words)
    if colour is not None:
        return [ChangeAttribute(i, "colour", colour) for i in ids]
    if len(words) == 1 and words[0] in MATERIALS:
        return [ChangeAttribute(i, "material", words[0]) for i in ids]
    if words[0] in ("a", "an", "one", "the") or len(targets) > 1:
        return _like(words, targets, context)
    return None


def _colour(words: list[str]) -> str | None:
    words = [w for w in words if w not in ("coloured", "colored", "in", "colour", "color")] or words
    if len(words) == 1 and words[0] in COLOURS:
        return words[0]
    if len(words) == 2 and words[0] in _SHADES and words[1] in COLOURS:
        return " ".join(words)
    return None


def _like(words: list[str], targets: list[int], context: _Context) -> list[Edit] | None:
    """"a green one" / "a big green circle": attributes of each target; "a cat": a new prompt."""
    entity = read_noun_phrase(words)
    if entity is None:
        return None
    heads = {_head_of(context.scene.regions[k].prompt) for k in targets}
    if entity.head not in _WILDCARD_HEADS and entity.head not in heads:
        return _new_prompt(words, context, targets)
    edits: list[Edit] = []
    modifiers = list(entity.modifiers)
    k = 0
    while k < len(modifiers):
        word = modifiers[k]
        if word in _SHADES and k + 1 < len(modifiers) and modifiers[k + 1] in COLOURS:
            edits += [ChangeAttribute(i, "colour", f"{word} {modifiers[k + 1]}") for i in _ids(context, targets)]
            k += 2
            continue
        kind = "colour" if word in COLOURS else "size" if word in SIZES else "material" if word in MATERIALS else None
        if kind is None:  # "a striped one": say it again with the new word
            return [ReplacePrompt(context.scene.regions[t].id,
                                  read_noun_phrase([*words[:-1], _head_of(context.scene.regions[t].prompt)]).caption)
                    for t in targets] if entity.head in _WILDCARD_HEADS else _new_prompt(words, context, targets)
        edits += [ChangeAttribute(i, kind, word) for i in _ids(context, targets)]
        k += 1
    return edits or None


def _head_of(prompt: str) -> str:
    """The head noun of a region's prompt as the prompt reader finds it ("a red circle, glossy" -> "circle")."""
    first = re.split(r"[,;(]", prompt.lower(), maxsplit=1)[0]
    entity = read_noun_phrase(tokenize(first))
    return entity.head if entity is not None else first.strip().split(" ")[-1]


def _read_make(words: list[str], context: _Context) -> list[Edit] | None:
    if words[0] not in _MAKE or len(words) < 3:
        return None
    rest = words[1:]
    attribute = None
    for name in ("colour", "color", "size", "material"):
        if _starts(rest, ("the", name, "of")):
            attribute, rest = name, rest[3:]
            break
    for joiner in (("to",), ("into",)):
        cut = _split_at(rest, joiner)
        if cut is not None and words[0] in ("change", "turn", "set", "colour", "color") and not _is_relation_tail(
                cut[1]):
            targets = _refer(cut[0], context)
            found = _values(cut[1], targets, context) or _new_prompt(cut[1], context, targets)
            if found is None:
                raise _unknown(context.text, f"it did not understand what to make {' '.join(cut[0])!r}: "
                                             f"{' '.join(cut[1])!r}")
            if attribute in ("colour", "color") and not all(isinstance(e, ChangeAttribute) for e in found):
                raise _unknown(context.text, f"{' '.join(cut[1])!r} is no colour")
            return found
    first_error: InstructionError | None = None
    for cut in range(1, len(rest)):  # "make the red circle blue": the longest tail that reads as values
        tail = rest[cut:]
        if _scale(tail) is None and _colour(tail) is None and tail[0] not in ("a", "an", "one") and not (
                tail[0] in MATERIALS or "and" in tail or _scale(tail[:1]) is not None):
            continue
        try:
            targets = _refer(rest[:cut], context)
        except InstructionError as error:
            first_error = first_error or error
            continue
        found = _values(tail, targets, context)
        if found is not None:
            return found
    if first_error is not None:
        raise first_error
    return None


def _is_relation_tail(words: list[str]) -> bool:
    """"move ... to the left of the square": the "to" of a place, not of a change."""
    return _destination(["to", *words]) is not None and _colour(words) is None


def _read_should_be(words: list[str], context: _Context) -> list[Edit] | None:
    """"the circle should be blue" / "the square must be bigger"."""
    for phrase in (("should", "be"), ("must", "be"), ("needs", "to", "be"), ("has", "to", "be"), ("is",), ("are",)):
        for cut in range(1, len(words) - len(phrase)):
            if tuple(words[cut:cut + len(phrase)]) == phrase:
                targets = _refer(words[:cut], context)
                tail = words[cut + len(phrase):]
                where = _destination(tail)
                if where is not None:
                    return _move_edits(targets, where, context)
                return _values(tail, targets, context)
    return None
