"""Simple English sentences for text-to-speech, generated deterministically from word lists.

The word lists and templates are our own (no copyrighted text). :func:`sentences` always
returns the same list for the same ``n`` and ``seed``.
"""

from __future__ import annotations

import numpy as np

_NAMES = [
    "Anna", "Peter", "Maria", "John", "Lucy", "David", "Emma", "Paul", "Nina", "Oscar",
    "Sarah", "Tom", "Clara", "Victor", "Helen", "Marco",
]
_ADJ = [
    "old", "small", "bright", "quiet", "green", "heavy", "warm", "cold", "tall", "yellow",
    "round", "empty", "busy", "gentle", "wooden", "narrow", "golden", "sleepy", "clever", "dusty",
]
_NOUN = [
    "house", "garden", "river", "window", "table", "bridge", "market", "letter", "basket",
    "village", "kitchen", "station", "forest", "mountain", "library", "harbour", "school",
    "bicycle", "lamp", "boat", "road", "field", "tower", "clock",
]
_ANIMAL = ["dog", "cat", "horse", "bird", "fox", "rabbit", "sheep", "goat", "duck", "bear"]
_VERB_PAST = [
    "walked to", "looked at", "painted", "cleaned", "found", "carried", "opened", "closed",
    "visited", "followed", "watched", "repaired", "passed", "reached", "left", "noticed",
]
_TIME = [
    "in the morning", "after lunch", "late at night", "on Sunday", "every winter",
    "before dinner", "at noon", "during the storm", "last summer", "early today",
]
_FOOD = ["bread", "apples", "soup", "cheese", "rice", "tea", "coffee", "cake", "fish", "eggs"]
_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]

_TEMPLATES = [
    "The {adj} {noun} is near the {noun2}.",
    "{name} {verb} the {adj} {noun} {time}.",
    "A {animal} was sleeping under the {noun}.",
    "We bought {num} loaves of {food} at the {noun}.",
    "Please put the {food} on the {adj} table.",
    "{name} and {name2} {verb} the {noun} together.",
    "The {animal} ran across the {adj} {noun} {time}.",
    "Can you see the {adj} {noun} from the {noun2}?",
    "There are {num} {animal}s in the {noun}.",
    "My friend {name} likes {food} {time}.",
    "The {noun} was {adj} and the {noun2} was {adj2}.",
    "{name} said that the {noun} is very {adj}.",
    "We will meet at the {noun} {time}.",
    "Turn left at the {adj} {noun} and walk to the {noun2}.",
    "The {adj} {animal} {verb} the {noun} {time}.",
    "I think {name} forgot the {food} in the {noun}.",
]


def sentences(n: int = 240, seed: int = 0) -> list[str]:
    """Return ``n`` distinct simple English sentences (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    while len(out) < n:
        tpl = _TEMPLATES[len(out) % len(_TEMPLATES)]
        name, name2 = rng.choice(_NAMES, size=2, replace=False)
        noun, noun2 = rng.choice(_NOUN, size=2, replace=False)
        adj, adj2 = rng.choice(_ADJ, size=2, replace=False)
        s = tpl.format(
            name=name, name2=name2, noun=noun, noun2=noun2, adj=adj, adj2=adj2,
            verb=pick(_VERB_PAST), time=pick(_TIME), food=pick(_FOOD), num=pick(_NUMBERS),
            animal=pick(_ANIMAL),
        )
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
