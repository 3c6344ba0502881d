"""English words the scene layer needs to rewrite region prompts (edits): attribute words, articles, plurals.

Plain data and small helpers, no logic beyond them. The offline planner's lexicon
(:mod:`scenecraft.planning.lexicon`) re-exports these, so both layers read one list.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTE_WORDS", "COLOURS", "MASS_PLURALS", "MATERIALS", "PAIR_NOUNS", "SIZES", "IRREGULAR_PLURALS",
    "a_or_an", "number_word", "pluralize",
]

COLOURS = frozenset({
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "grey",
    "violet", "cyan", "magenta", "teal", "gold", "golden", "silver", "beige", "turquoise", "navy", "maroon",
    "indigo", "lime", "crimson", "scarlet", "olive", "tan", "cream", "ivory", "lavender",
})

#: Size adjectives a "size" attribute edit rewrites ("a small dog" -> "a huge dog").
SIZES = frozenset({"big", "small", "large", "tiny", "huge", "little", "giant", "medium", "enormous", "massive",
                   "miniature", "mini", "gigantic"})

#: Material adjectives a "material" attribute edit rewrites ("a wooden chair" -> "a metal chair").
MATERIALS = frozenset({"wooden", "metal", "metallic", "plastic", "glass", "stone", "golden", "silver", "paper",
                       "leather", "woolen", "woollen", "wool", "ceramic", "marble", "steel", "iron", "brass",
                       "copper", "concrete", "velvet", "cotton", "silk", "rubber", "crystal", "clay"})

#: The attribute kinds :class:`~scenecraft.scene.edits.ChangeAttribute` knows, and the words of each.
ATTRIBUTE_WORDS = {"colour": COLOURS, "size": SIZES, "material": MATERIALS}

#: Nouns plural in form that name one object, counted in pairs: "a pair of scissors", "two pairs of jeans".
PAIR_NOUNS = frozenset({
    "scissors", "glasses", "sunglasses", "eyeglasses", "spectacles", "goggles", "binoculars", "jeans",
    "trousers", "pants", "shorts", "leggings", "tights", "pajamas", "pyjamas", "overalls", "slacks",
    "sweatpants", "dungarees", "trunks", "pliers", "tongs", "tweezers", "pincers", "shears", "clippers",
    "forceps", "headphones", "earphones", "earbuds", "handcuffs", "suspenders",
})
#: Nouns plural in form that name one mass of things and have no singular: "clothes".
MASS_PLURALS = frozenset({"clothes", "belongings", "groceries", "leftovers"})

IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice", "goose": "geese",
    "tooth": "teeth", "foot": "feet", "sheep": "sheep", "fish": "fish", "deer": "deer", "ox": "oxen",
    "knife": "knives", "leaf": "leaves", "wolf": "wolves", "shelf": "shelves", "loaf": "loaves", "life": "lives",
    "wife": "wives", "calf": "calves", "half": "halves", "elf": "elves", "thief": "thieves", "cactus": "cacti",
    "fungus": "fungi", "bus": "buses", "glass": "glasses", "dress": "dresses", "potato": "potatoes",
    "tomato": "tomatoes", "hero": "heroes", "mango": "mangoes", "die": "dice", "policeman": "policemen",
    "fireman": "firemen", "species": "species", "series": "series", "aircraft": "aircraft",
}

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
            "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")


def pluralize(word: str) -> str:
    """The plural of a singular English noun (a noun plural in form is its own plural)."""
    if word in PAIR_NOUNS or word in MASS_PLURALS:
        return word
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def a_or_an(word: str) -> str:
    """``"a"`` or ``"an"`` before ``word`` (vowel-sound heuristic)."""
    lowered = word.lower()
    if lowered.startswith(("uni", "use", "usu", "one", "eu", "ur")):
        return "a"
    if lowered.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    return "an" if lowered[:1] in set("aeiou") else "a"


def number_word(count: int) -> str:
    """``"three"`` for 3 (up to twenty), the digits past it."""
    return _NUMBERS[count] if 0 <= count < len(_NUMBERS) else str(count)
