"""``bench plan``: LMD's stage-1 layout benchmark (Lian et al. 2023, "LLM-grounded Diffusion").

400 prompts in 4 tasks of 100, over 10 COCO classes, generated exactly as LMD's
``utils/eval/lmd.py`` does (same templates, same ``numpy`` seeds):

* negation: "A realistic photo of a scene without {plural}", 10 classes x 10 repeats;
* generative numeracy: "... with {one..five} {class(es)}", 5 numbers x 10 classes x 2 repeats;
* attribute binding: "... with {a/an} {colour1} {class1} and {a/an} {colour2} {class2}", prompt i
  draws two different colours of 11 and two different classes with ``np.random.seed(i)``;
* spatial relationships: "... with {a} {class1} on the {left/right/top/bottom} and {a} {class2} on
  the {opposite}", 25 seeds x 4 directions.

The layout itself is scored with LMD's stage-1 predicates (no image is generated): a box "shows" a
class when its name contains the class word (singular or plural, whole word);
negation = no box shows the class; numeracy = exactly N boxes show it; attribute binding = some box
names "{colour1} ... {class1}" and some box names "{colour2} ... {class2}"; spatial = the box
centres of the first box of each class are ordered as asked.

A second suite, the forms suite (:mod:`scenecraft.evaluation.plan_forms`), scores scenecraft's own
phrasings of six English forms (exclusivity, counted lists, shared attributes, "no X, only Y",
relations a split must keep, nouns plural in form); it runs for every planner but a replay (LMD's
recorded replies do not cover it) and is reported on its own, below the LMD figures.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scene import Scene
from .plan_forms import FORM_CAUSES, FORMS_SUITE, FormSpec, score_form

__all__ = ["CATEGORIES", "LMD_CLASSES", "BenchItem", "PlanBenchResult", "lmd_benchmark", "make_planner",
           "run_plan_bench", "scene_boxes", "score_scene"]

LMD_CLASSES = ("backpack", "book", "bottle", "bowl", "car", "cat", "chair", "cup", "dog", "laptop")
_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")
_NUMBERS = ("one", "two", "three", "four", "five")
_PREFIX = "A realistic photo of a scene"
CATEGORIES = ("negation", "numeracy", "attribution", "spatial")
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


@dataclass(frozen=True)
class BenchItem:
    """One benchmark prompt and what its predicate checks.

    ``objects`` holds (class, colour or None, count or None, location or None) per named object.
    """

    prompt: str
    category: str
    objects: tuple[tuple[str, str | None, int | None, str | None], ...]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def lmd_benchmark() -> list[BenchItem]:
    """The 400 prompts of LMD's benchmark, in LMD's order."""
    import numpy as np

    items = []
    for name in LMD_CLASSES:
        items += [BenchItem(f"{_PREFIX} without {name}s", "negation", ((name, None, 0, None),))] * 10
    for number, word in enumerate(_NUMBERS, start=1):
        for name in LMD_CLASSES:
            noun = f"{name}s" if number > 1 else name
            items += [BenchItem(f"{_PREFIX} with {word} {noun}", "numeracy", ((name, None, number, None),))] * 2
    classes = np.array(LMD_CLASSES, dtype=object)
    for seed in range(100):
        rng = np.random.RandomState(seed)  # LMD calls np.random.seed(seed): the same stream
        colour1, colour2 = rng.choice(np.array(_COLOURS), 2, replace=False)
        name1, name2 = rng.choice(classes, 2, replace=False)
        prompt = f"{_PREFIX} with {_a(str(colour1))} {name1} and {_a(str(colour2))} {name2}"
        items.append(BenchItem(prompt, "attribution", ((name1, str(colour1), None, None),
                                                       (name2, str(colour2), None, None))))
    for seed in range(25):
        rng = np.random.RandomState(seed)
        for location in ("left", "right", "top", "bottom"):
            name1, name2 = rng.choice(classes, 2, replace=False)
            other = _OPPOSITE[location]
            prompt = f"{_PREFIX} with {_a(name1)} on the {location} and {_a(name2)} on the {other}"
            items.append(BenchItem(prompt, "spatial", ((name1, None, None, location), (name2, None, None, other))))
    return items


def _shows(name: str, cls: str, colour: str | None = None) -> bool:
    lowered = name.lower()
    noun = rf"\b{re.escape(cls)}(?:s|es)?\b"
    if colour is None:
        return re.search(noun, lowered) is not None
    return re.search(rf"\b{re.escape(colour)}\b(?:[\s,-]+[\w-]+){{0,3}}?[\s,-]+{noun}", lowered) is not None


def scene_boxes(scene: Scene) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(region prompt, rectangle) of every box or split-cell region."""
    out = []
    for region in scene.regions:
        rect = scene.region_rect(region)
        if rect is not None:
            out.append((region.prompt, rect))
    return out


def score_scene(item: BenchItem, scene: Scene) -> tuple[bool, str]:
    """LMD's stage-1 predicate for ``item`` on ``scene``'s layout: (passed, reason when it failed)."""
    boxes = scene_boxes(scene)
    if item.category in ("negation", "numeracy"):
        cls, _, count, _ = item.objects[0]
        found = sum(_shows(name, cls) for name, _ in boxes)
        return found == count, f"{found} box(es) show {cls}, wanted {count}"
    if item.category == "attribution":
        for cls, colour, _, _ in item.objects:
            if not any(_shows(name, cls, colour) for name, _ in boxes):
                return False, f"no box shows a {colour} {cls}"
        return True, ""
    (cls1, _, _, where1), (cls2, _, _, _) = item.objects
    first = [next((rect for name, rect in boxes if _shows(name, cls)), None) for cls in (cls1, cls2)]
    if first[0] is None or first[1] is None:
        return False, f"no box for {cls1 if first[0] is None else cls2}"
    (a, b) = first
    axis = 0 if where1 in ("left", "right") else 1
    centre_a, centre_b = (a[axis] + a[axis + 2]) / 2, (b[axis] + b[axis + 2]) / 2
    ok = centre_a < centre_b if where1 in ("left", "top") else centre_a > centre_b
    return ok, f"{cls1} centre {centre_a:.2f} is not {where1} of {cls2} centre {centre_b:.2f}"


@dataclass
class PlanBenchResult:
    """Per-category (correct, total), failures (prompt, reason), planning time per prompt; the same
    for the forms suite per cause (empty when it did not run; its failures are listed in
    ``failures`` too, their reasons starting with "forms: ")."""

    planner: str
    layout: str
    per_category: dict[str, tuple[int, int]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    ms_per_prompt: float = 0.0
    forms: dict[str, tuple[int, int]] = field(default_factory=dict)
    forms_ms_per_prompt: float = 0.0

    @property
    def overall(self) -> float:
        correct = sum(c for c, _ in self.per_category.values())
        total = sum(t for _, t in self.per_category.values())
        return correct / total if total else 0.0

    def accuracy(self, category: str) -> float:
        correct, total = self.per_category[category]
        return correct / total if total else 0.0

    @property
    def forms_overall(self) -> float:
        correct = sum(c for c, _ in self.forms.values())
        total = sum(t for _, t in self.forms.values())
        return correct / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {
            "planner": self.planner, "layout": self.layout, "categories": _table(self.per_category),
            "overall": round(100 * self.overall, 1), "ms_per_prompt": round(self.ms_per_prompt, 3),
            "failures": [{"prompt": p, "reason": r} for p, r in self.failures],
        }
        if self.forms:
            data["forms"] = {"causes": _table(self.forms), "overall": round(100 * self.forms_overall, 1),
                             "ms_per_prompt": round(self.forms_ms_per_prompt, 3)}
        return data

    def lines(self) -> list[str]:
        out = [f"planner {self.planner}  layout {self.layout}"]
        out += _rows(self.per_category, 12)
        out.append(f"overall {100 * self.overall:.1f}%")
        out.append(f"planning {self.ms_per_prompt:.3f} ms/prompt")
        if self.forms:
            out.append("forms suite (scenecraft's phrasings of six English forms)")
            out += _rows(self.forms, 17)
            out.append(f"forms overall {100 * self.forms_overall:.1f}%")
            out.append(f"forms planning {self.forms_ms_per_prompt:.3f} ms/prompt")
        return out


def _table(counts: dict[str, tuple[int, int]]) -> dict[str, dict[str, Any]]:
    return {k: {"correct": c, "total": t, "accuracy": round(100 * c / t, 1) if t else None}
            for k, (c, t) in counts.items()}


def _rows(counts: dict[str, tuple[int, int]], width: int) -> list[str]:
    return [f"{name:<{width}} {correct:>3}/{total:<3} {100 * correct / total if total else 0.0:5.1f}%"
            for name, (correct, total) in counts.items()]


Planner = Callable[[str, int], Scene]


def _replay_planner(path: Path) -> Planner:
    from ..planning.readers import read_lmd

    replies = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(replies, dict):
        raise ValueError(f"{path}: a replay file is a JSON object mapping each prompt to a list of replies")

    def plan(prompt: str, occurrence: int) -> Scene:
        answers = replies.get(prompt)
        if not answers:
            raise ValueError(f"no recorded reply for {prompt!r}")
        return read_lmd(answers[occurrence % len(answers)], prompt=prompt)

    return plan


def make_planner(planner: str, *, layout: str = "boxes", cache_dir: str | Path | None = None) -> Planner:
    """``offline``, ``replay:PATH`` (LMD cache file: prompt -> list of replies) or ``llm:SPEC``."""
    from ..planning import plan_scene

    if planner == "offline":
        return lambda prompt, _: plan_scene(prompt, layout=layout)
    if planner.startswith("replay:"):
        return _replay_planner(Path(planner[len("replay:"):]))
    if planner.startswith("llm:"):
        spec = planner[len("llm:"):]
        return lambda prompt, _: plan_scene(prompt, layout=layout, llm=spec, cache_dir=cache_dir)
    raise ValueError(f"planner must be 'offline', 'replay:PATH' or 'llm:SPEC', got {planner!r}")


def run_plan_bench(planner: str = "offline", *, layout: str = "boxes", limit: int | None = None,
                   cache_dir: str | Path | None = None,
                   on_prompt: Callable[[int, int], None] | None = None, forms: bool | None = None) -> PlanBenchResult:
    """Plan and score LMD's 400 prompts (the first ``limit`` of each category if given), then the
    forms suite (the first ``limit`` of each cause).

    Args:
        planner: ``"offline"`` (default), ``"replay:PATH"`` or ``"llm:SPEC"``.
        layout: ``"boxes"`` (default) or ``"split"``.
        limit: prompts per category (default all 100) and per cause of the forms suite (default all).
        cache_dir: plan cache for ``llm:`` planners (default: the user cache).
        on_prompt: called with (prompts done, prompts in all) after each prompt, for progress.
        forms: run the forms suite (default: for every planner but ``replay:``).
    """
    plan = make_planner(planner, layout=layout, cache_dir=cache_dir)
    items = _selected_items(limit)
    run_forms = not planner.startswith("replay:") if forms is None else forms
    form_items = _selected_forms(limit) if run_forms else []
    result = PlanBenchResult(planner=planner, layout=layout, per_category={c: (0, 0) for c in CATEGORIES})
    progress = _Progress(len(items) + len(form_items), on_prompt)
    result.ms_per_prompt = _score_all(result, result.per_category, [
        (item.category, item.prompt, lambda scene, item=item: score_scene(item, scene), plan, occurrence)
        for item, occurrence in items], progress)
    if form_items:
        result.forms = {c: (0, 0) for c in FORM_CAUSES}
        planners = {layout: plan}
        jobs = [(spec.cause, prompt, lambda scene, spec=spec: score_form(spec, scene),
                 _planner_for(planners, spec.layout or layout, planner, cache_dir), 0) for prompt, spec in form_items]
        result.forms_ms_per_prompt = _score_all(result, result.forms, jobs, progress, tag="forms: ")
    return result


@dataclass
class _Progress:
    total: int
    callback: Callable[[int, int], None] | None
    done: int = 0

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


Job = tuple[str, str, Callable[[Scene], tuple[bool, str]], Planner, int]  # group, prompt, scorer, planner, occurrence


def _score_all(result: PlanBenchResult, counts: dict[str, tuple[int, int]], jobs: list[Job], progress: _Progress,
               tag: str = "") -> float:
    """Plan and score every job into ``counts`` and ``result.failures``; the mean ms per prompt."""
    elapsed = 0.0
    for group, prompt, score, plan, occurrence in jobs:
        start = time.perf_counter()
        try:
            scene = plan(prompt, occurrence)
            elapsed += time.perf_counter() - start
            ok, reason = score(scene)
        except ValueError as error:
            elapsed += time.perf_counter() - start
            ok, reason = False, f"planner error: {error}"[:300]
        correct, total = counts[group]
        counts[group] = (correct + ok, total + 1)
        if not ok:
            result.failures.append((prompt, tag + reason))
        progress.step()
    return 1000 * elapsed / len(jobs) if jobs else 0.0


def _planner_for(planners: dict[str, Planner], layout: str, planner: str, cache_dir: str | Path | None) -> Planner:
    if layout not in planners:
        planners[layout] = make_planner(planner, layout=layout, cache_dir=cache_dir)
    return planners[layout]


def _selected_forms(limit: int | None) -> list[tuple[str, FormSpec]]:
    used: dict[str, int] = {}
    chosen = []
    for prompt, spec in FORMS_SUITE:
        used[spec.cause] = used.get(spec.cause, 0) + 1
        if limit is None or used[spec.cause] <= limit:
            chosen.append((prompt, spec))
    return chosen


def _selected_items(limit: int | None) -> list[tuple[BenchItem, int]]:
    """The benchmark's items (the first ``limit`` of each category if given), each with the number of
    times its prompt came before (which recorded reply a replay planner uses)."""
    seen: dict[str, int] = {}
    used: dict[str, int] = {c: 0 for c in CATEGORIES}
    items = []
    for item in lmd_benchmark():
        occurrence = seen.get(item.prompt, 0)
        seen[item.prompt] = occurrence + 1
        if limit is not None and used[item.category] >= limit:
            continue
        used[item.category] += 1
        items.append((item, occurrence))
    return items
