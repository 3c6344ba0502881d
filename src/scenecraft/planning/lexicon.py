"""Word lists of the offline planner. Plain data, no logic beyond small helpers.

Colours, nouns plural in form, plurals and articles live in :mod:`scenecraft.scene.words` (edits rewrite
region prompts with them) and are re-exported here.
"""

from __future__ import annotations

from ..scene.words import COLOURS, IRREGULAR_PLURALS, MASS_PLURALS, PAIR_NOUNS, a_or_an, pluralize

__all__ = [
    "CATEGORY_NOUNS", "COLOURS", "MASS_PLURALS", "NUMBER_WORDS", "PAIR_NOUNS", "SETTINGS", "STYLE_NOUNS", "a_or_an",
    "pluralize", "singularize",
]

#: Adjectives that may be followed by a comma inside one noun phrase ("a big, red ball").
SIZE_WORDS = frozenset({"big", "small", "large", "tiny", "huge", "little", "tall", "short", "long", "giant", "old", "young"})

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "dozen": 12, "single": 1, "both": 2,
    "several": 3, "few": 3, "many": 5, "multiple": 3, "some": 3, "numerous": 5,
}

#: Collective words: "a group of five birds", "a pair of shoes".
COLLECTIVES = {"pair": 2, "couple": 2, "group": 3, "bunch": 3, "set": 3, "herd": 4, "flock": 4, "pile": 3,
               "stack": 3, "row": 3, "line": 3, "handful": 3, "trio": 3, "team": 4, "crowd": 6, "family": 3}

#: Nouns that name a kind of objects, so that "three animals, a cat, a dog and a horse" is one list of
#: three (with a colon any counted noun works: "two cups: a red one and a blue one").
CATEGORY_NOUNS = frozenset({
    "thing", "object", "item", "animal", "shape", "fruit", "vegetable", "pet", "vehicle", "toy", "tool",
    "creature", "food", "piece", "kind", "instrument", "utensil", "plant", "drink", "accessory", "device",
    "gadget", "person", "people", "character", "figure", "product", "furniture", "beast", "garment",
})

DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "his", "her", "its", "their", "my",
                         "our", "your", "any", "another", "each", "every"})

#: Place, weather and time nouns: "in a park", "at night" go to the background prompt.
SETTINGS = frozenset({
    "park", "beach", "forest", "woods", "jungle", "street", "road", "highway", "alley", "city", "town", "village",
    "room", "bedroom", "kitchen", "bathroom", "office", "classroom", "library", "field", "meadow", "garden",
    "yard", "backyard", "desert", "ocean", "sea", "lake", "river", "pond", "shore", "coast", "mountain",
    "mountains", "hill", "hills", "valley", "canyon", "snow", "sky", "space", "studio", "farm", "grass",
    "lawn", "background", "night", "sunset", "sunrise", "dawn", "dusk", "morning", "evening", "afternoon",
    "winter", "summer", "autumn", "rain", "fog", "underwater", "water", "harbor", "harbour", "airport",
    "station", "market", "restaurant", "cafe", "stadium", "playground", "cave", "island", "countryside",
    "savanna", "swamp", "arctic", "sand", "stage", "church", "museum", "hospital", "school", "zoo",
    "aquarium", "gym", "bar", "pub", "universe", "galaxy", "moon", "wall", "floor", "interior", "landscape",
    "cityscape", "sunlight", "moonlight", "daylight", "dark", "storm", "wilderness", "prairie", "tundra",
    "ground", "scene", "setting", "surface", "world", "tabletop",
})

STYLE_NOUNS = frozenset({
    "photo", "photograph", "picture", "image", "painting", "drawing", "illustration", "render", "rendering",
    "sketch", "shot", "snapshot", "view", "poster", "artwork", "watercolor", "watercolour", "scene", "cartoon",
})

#: Words naming the canvas itself: "on the left of the image" is an absolute position.
CANVAS_WORDS = frozenset({"image", "picture", "photo", "scene", "frame", "canvas", "photograph", "view"})

#: Nouns that end in -ing (so they are not verbs).
NOUN_ING = frozenset({
    "painting", "building", "ring", "king", "swing", "wing", "string", "spring", "ceiling", "pudding", "thing",
    "earring", "sibling", "dumpling", "wedding", "evening", "morning", "clothing", "stocking", "icing", "sling",
    "drawing", "lightning", "ding", "ping", "sing", "bing", "viking", "duckling", "seedling", "frosting", "railing",
    "stuffing", "awning", "sapling", "lemming", "herring", "shilling", "bunting", "filling", "ending",
})

FILLERS = frozenset({"there", "is", "are", "be", "was", "were", "also", "placed", "positioned", "located",
                     "shown", "visible", "together", "respectively", "each", "too", "here", "which", "that",
                     "it", "they", "just", "only", "please", "draw", "show", "generate", "create",
                     "make", "depict", "me", "we", "see", "can", "you", "i", "want", "parked", "seated", "drawn",
                     "painted", "perched", "stacked", "lined", "scattered", "arranged", "hung", "kept", "set"})

#: Words that refer back to objects already named: "a laptop below them".
PRONOUNS = frozenset({"them", "it", "they", "him", "her", "those", "these", "others", "one", "ones", "both"})

_IRREGULAR_SINGULARS = {plural: singular for singular, plural in IRREGULAR_PLURALS.items()}

#: Words before "glasses" that make it drinking glasses (a count noun), not eyewear.
DRINK_WORDS = frozenset({"wine", "drinking", "champagne", "beer", "shot", "water", "cocktail", "martini",
                         "whiskey", "whisky", "juice", "milk", "empty", "full", "crystal"})
_KEEP_S = ("ss", "us", "is", "ous", "ics", "news")


def singularize(word: str) -> str:
    """The singular of an English noun (rules plus an irregular table); unknown forms come back unchanged."""
    if word in PAIR_NOUNS or word in MASS_PLURALS:
        return word
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP_S):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    return word[:-1]


def is_plural(word: str) -> bool:
    """Whether ``word`` looks like a plural noun (one plural only in form, "scissors", is not)."""
    if word in PAIR_NOUNS or word in MASS_PLURALS:
        return False
    return word in _IRREGULAR_SINGULARS and _IRREGULAR_SINGULARS[word] != word or singularize(word) != word


