"""The forms suite of ``bench plan``: scenecraft's own phrasings of six general English forms.

LMD's 400 prompts are templates; these are the forms a new user writes that a planner must read
before any pixel is drawn (issue 15):

* ``exclusivity``: "a cat by itself", "exactly two green pears and nothing else" name no other object;
* ``counted-list``: "three animals: a cat, a dog and a horse" is three objects, not six;
* ``shared-attributes``: "two cups, both blue" colours both cups;
* ``no-x-only-y``: "no cats, only a dog" draws the dog and excludes the cats;
* ``split-relations``: a split layout keeps every stated relation ("a lamp on top of a table, and a
  chair to the right of both") or falls back to boxes and says so in the scene's notes;
* ``plural-nouns``: "scissors", "jeans" are one object each ("a pair of scissors"), never "a scissor".

Each item is a prompt and a :class:`FormSpec`; :func:`score_form` checks a planned scene against
the spec as :func:`~scenecraft.evaluation.plan_bench.score_scene` checks an LMD item: the region
prompts (as a multiset; a split's background filler cells left out), the phrases the negative
prompt must hold, relations between the centres of every box of two region prompts, notes, and
whether the scene came back as boxes or as a split.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..scene import Box, Scene

__all__ = ["FORMS_SUITE", "FORM_CAUSES", "FormSpec", "score_form"]

FORM_CAUSES = ("exclusivity", "counted-list", "shared-attributes", "no-x-only-y", "split-relations",
               "plural-nouns")


@dataclass(frozen=True)
class FormSpec:
    """What the plan of one prompt must hold.

    Attributes:
        cause: one of FORM_CAUSES.
        regions: every region prompt, in any order (a split's background filler cells left out).
        negative: phrases the negative prompt must list (it may list more).
        relations: ``(prompt a, kind, prompt b)``, kind ``left``/``right``/``above``/``below``/``inside``:
            holds between every box of ``a`` and every box of ``b`` (centres; containment for inside).
        notes: words some note of the scene must contain (lower case).
        layout: the layout to plan with (None: the bench's layout).
        geometry: ``"boxes"`` or ``"split"``: what the scene must come back as (None: as asked).
    """

    cause: str
    regions: tuple[str, ...]
    negative: tuple[str, ...] = ()
    relations: tuple[tuple[str, str, str], ...] = ()
    notes: tuple[str, ...] = ()
    layout: str | None = None
    geometry: str | None = None


def _spec(cause: str, *regions: str, **kwargs: object) -> FormSpec:
    return FormSpec(cause, tuple(regions), **kwargs)  # type: ignore[arg-type]


_SPLIT = {"layout": "split", "geometry": "split"}

#: (prompt, expected spec): about ten phrasings per form, varying nouns, colours, counts and order.
FORMS_SUITE: tuple[tuple[str, FormSpec], ...] = (
    ("a cat by itself", _spec("exclusivity", "a cat")),
    ("only a red apple", _spec("exclusivity", "a red apple")),
    ("a lone tree and nothing more", _spec("exclusivity", "a lone tree")),
    ("exactly two green pears and nothing else", _spec("exclusivity", "a green pear", "a green pear")),
    ("just one blue mug, nothing else", _spec("exclusivity", "a blue mug")),
    ("a single yellow duck all alone", _spec("exclusivity", "a yellow duck")),
    ("a horse on its own in a field", _spec("exclusivity", "a horse")),
    ("nothing but three white eggs", _spec("exclusivity", *["a white egg"] * 3)),
    ("precisely four orange balls and that's it", _spec("exclusivity", *["an orange ball"] * 4)),
    ("two penguins by themselves in the snow", _spec("exclusivity", "a penguin", "a penguin")),
    ("a dog alone, with no other animals", _spec("exclusivity", "a dog", negative=("other animals",))),

    ("three animals: a cat, a dog and a horse", _spec("counted-list", "a cat", "a dog", "a horse")),
    ("four things: a cup, a book, a lamp and a phone",
     _spec("counted-list", "a cup", "a book", "a lamp", "a phone")),
    ("two fruits: an apple, a banana and a pear",
     _spec("counted-list", "an apple", "a banana", "a pear", notes=("list of 3",))),
    ("three animals, a cat, a dog and a horse", _spec("counted-list", "a cat", "a dog", "a horse")),
    ("three pets (a rabbit, a parrot and a goldfish)", _spec("counted-list", "a rabbit", "a parrot", "a goldfish")),
    ("five shapes: two red circles, a blue square and two green triangles",
     _spec("counted-list", "a red circle", "a red circle", "a blue square", "a green triangle", "a green triangle")),
    ("three red things: a ball, a cup and a hat", _spec("counted-list", "a red ball", "a red cup", "a red hat")),
    ("a cow, a pig and a goat: three animals", _spec("counted-list", "a cow", "a pig", "a goat")),
    ("four vehicles - a car, a bus, a truck and a bicycle",
     _spec("counted-list", "a car", "a bus", "a truck", "a bicycle")),
    ("the only object is a cup", _spec("counted-list", "a cup")),
    ("two animals, namely a cat and a dog", _spec("counted-list", "a cat", "a dog")),
    ("three things on a table: a vase, a plate and a candle",
     _spec("counted-list", "a vase", "a plate", "a candle", "a table",
           relations=(("a vase", "above", "a table"), ("a candle", "above", "a table")))),

    ("two cups, both blue", _spec("shared-attributes", "a blue cup", "a blue cup")),
    ("three birds, all black", _spec("shared-attributes", *["a black bird"] * 3)),
    ("a pair of shoes, each one white", _spec("shared-attributes", "a white shoe", "a white shoe")),
    ("four dogs, all of them brown", _spec("shared-attributes", *["a brown dog"] * 4)),
    ("two chairs, both wooden", _spec("shared-attributes", "a wooden chair", "a wooden chair")),
    ("three vases, every one of them tall and green", _spec("shared-attributes", *["a tall green vase"] * 3)),
    ("five balloons, three red and the rest blue",
     _spec("shared-attributes", *["a red balloon"] * 3, *["a blue balloon"] * 2)),
    ("four dogs, two of them black", _spec("shared-attributes", "a black dog", "a black dog", "a dog", "a dog")),
    ("two cars, each red, next to a tree",
     _spec("shared-attributes", "a red car", "a red car", "a tree", relations=(("a red car", "left", "a tree"),))),
    ("two cats: a black one and a white one", _spec("shared-attributes", "a black cat", "a white cat")),
    ("a pair of socks, both striped", _spec("shared-attributes", "a striped sock", "a striped sock")),

    ("no cats, only a dog", _spec("no-x-only-y", "a dog", negative=("cats",))),
    ("not a single car, just a bicycle", _spec("no-x-only-y", "a bicycle", negative=("car",))),
    ("no dogs; only a cat and a bird", _spec("no-x-only-y", "a cat", "a bird", negative=("dogs",))),
    ("no people, just an empty bench", _spec("no-x-only-y", "an empty bench", negative=("people",))),
    ("without any birds, only a tree and a bench", _spec("no-x-only-y", "a tree", "a bench", negative=("birds",))),
    ("no cars or trucks, just bicycles", _spec("no-x-only-y", "a bicycle", "a bicycle", negative=("cars", "trucks"))),
    ("there is no dog, only a cat", _spec("no-x-only-y", "a cat", negative=("dog",))),
    ("not a cat but a dog", _spec("no-x-only-y", "a dog", negative=("cat",))),
    ("a dog instead of a cat", _spec("no-x-only-y", "a dog", negative=("cat",))),
    ("no red apples, only green ones", _spec("no-x-only-y", "a green apple", "a green apple",
                                             negative=("red apples",))),
    ("no scissors, only a knife", _spec("no-x-only-y", "a knife", negative=("scissors",))),

    ("a lamp on top of a table, and a chair to the right of both",
     _spec("split-relations", "a lamp", "a table", "a chair", **_SPLIT, relations=(
         ("a lamp", "above", "a table"), ("a chair", "right", "a lamp"), ("a chair", "right", "a table")))),
    ("a cat above a dog, and a bird to the left of both",
     _spec("split-relations", "a cat", "a dog", "a bird", **_SPLIT, relations=(
         ("a cat", "above", "a dog"), ("a bird", "left", "a cat"), ("a bird", "left", "a dog")))),
    ("a clock above a sofa and a lamp to the left of both",
     _spec("split-relations", "a clock", "a sofa", "a lamp", **_SPLIT, relations=(
         ("a clock", "above", "a sofa"), ("a lamp", "left", "a clock"), ("a lamp", "left", "a sofa")))),
    ("a red book on a blue box, with a green cup right of them",
     _spec("split-relations", "a red book", "a blue box", "a green cup", **_SPLIT, relations=(
         ("a red book", "above", "a blue box"), ("a green cup", "right", "a red book"),
         ("a green cup", "right", "a blue box")))),
    ("two birds above a bench, and a tree to the right of them",
     _spec("split-relations", "a bird", "a bird", "a bench", "a tree", **_SPLIT, relations=(
         ("a bird", "above", "a bench"), ("a tree", "right", "a bird"), ("a tree", "right", "a bench")))),
    ("a cat in a box", _spec("split-relations", "a cat", "a box", layout="split", geometry="boxes",
                             relations=(("a cat", "inside", "a box"),), notes=("planned as boxes",))),
    ("a fish inside a bowl next to a plant",
     _spec("split-relations", "a fish", "a bowl", "a plant", layout="split", geometry="boxes",
           relations=(("a fish", "inside", "a bowl"),), notes=("planned as boxes",))),
    ("a kite above a boy, and a dog to the right of him",
     _spec("split-relations", "a kite", "a boy", "a dog", **_SPLIT, relations=(
         ("a kite", "above", "a boy"), ("a dog", "right", "a boy")))),

    ("a pair of scissors", _spec("plural-nouns", "a pair of scissors")),
    ("scissors next to a ruler", _spec("plural-nouns", "a pair of scissors", "a ruler",
                                       relations=(("a pair of scissors", "left", "a ruler"),))),
    ("two pairs of jeans", _spec("plural-nouns", "a pair of jeans", "a pair of jeans")),
    ("red trousers and a blue shirt", _spec("plural-nouns", "a pair of red trousers", "a blue shirt")),
    ("sunglasses on a towel", _spec("plural-nouns", "a pair of sunglasses", "a towel",
                                    relations=(("a pair of sunglasses", "above", "a towel"),))),
    ("headphones next to a laptop", _spec("plural-nouns", "a pair of headphones", "a laptop")),
    ("tongs beside a grill", _spec("plural-nouns", "a pair of tongs", "a grill")),
    ("binoculars above a map", _spec("plural-nouns", "a pair of binoculars", "a map")),
    ("three pairs of pliers", _spec("plural-nouns", *["a pair of pliers"] * 3)),
    ("two glasses of water", _spec("plural-nouns", "a glass of water", "a glass of water")),
    ("a pair of glasses on a book", _spec("plural-nouns", "a pair of glasses", "a book")),
    ("blue shorts and white pants", _spec("plural-nouns", "a pair of blue shorts", "a pair of white pants")),
)


def _centre(rect: tuple[float, float, float, float]) -> tuple[float, float]:
    return (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2


def _relation_holds(kind: str, a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    if kind == "inside":
        return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[kind]


def _objects(scene: Scene) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(prompt, rectangle) of every region that shows an object (a split's filler cells left out)."""
    fillers = {"empty background", scene.background_prompt}
    return [(r.prompt, scene.region_rect(r)) for r in scene.regions
            if r.prompt not in fillers and scene.region_rect(r) is not None]


def score_form(spec: FormSpec, scene: Scene) -> tuple[bool, str]:
    """Check ``scene`` against ``spec``: (passed, reason when it failed)."""
    objects = _objects(scene)
    shown = sorted(prompt for prompt, _ in objects)
    if shown != sorted(spec.regions):
        return False, f"regions {shown}, wanted {sorted(spec.regions)}"
    listed = {part.strip() for part in scene.negative_prompt.split(",")}
    missing = [phrase for phrase in spec.negative if phrase not in listed]
    if missing:
        return False, f"negative prompt {scene.negative_prompt!r} lacks {missing}"
    for a, kind, b in spec.relations:
        pairs = [(ra, rb) for pa, ra in objects if pa == a for pb, rb in objects if pb == b]
        if not pairs or not all(_relation_holds(kind, ra, rb) for ra, rb in pairs):
            return False, f"'{a}' is not {kind} '{b}'"
    for words in spec.notes:
        if not any(words in note.lower() for note in scene.notes):
            return False, f"no note says {words!r} (notes: {list(scene.notes)})"
    if spec.geometry is not None:
        got = "split" if scene.split is not None else "boxes" if all(
            isinstance(r.geometry, Box) for r in scene.regions) else "other"
        if got != spec.geometry:
            return False, f"the scene came back as {got}, wanted {spec.geometry}"
    return True, ""
