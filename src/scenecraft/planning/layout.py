"""Place parsed entities on the canvas: boxes (one per instance) and an RPG split derived from them.

The method, in short:

1. Relations become ordering edges: ``left`` / ``next`` give a horizontal edge (subject before
   object), ``above`` a vertical one; absolute positions ("on the left") become edges to invisible
   anchor nodes, so that "a dog on the left" alone takes the left half. An edge that would close a
   cycle is dropped (first mention wins).
2. Each node's column is its longest-path rank in the horizontal graph, its row likewise; an
   entity with no horizontal edge spans the columns of its vertical neighbours (or all of them),
   and vice versa.
3. Connected groups of entities are laid side by side in order of first mention; entities that
   land in the same slot share it left to right; ``inside`` puts the subject in the middle of its
   container.
4. Each entity's slot is cut into one sub-cell per instance (a near-square grid, or a row /
   column for "side by side" / "stacked"); each box is the sub-cell's middle, at most
   ``max_side`` of the canvas per side and at most ``max_aspect`` long-to-short.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .grammar import Entity, Relation

__all__ = ["LayoutKnobs", "place_boxes", "boxes_to_split"]

Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class LayoutKnobs:
    """Knobs of the box layout.

    Attributes:
        fill: share of each instance's sub-cell its box takes per side (default 0.75).
        max_side: largest box side as a fraction of the canvas (default 0.6; a bigger box reads as
            background to LMD-style generators).
        max_aspect: largest long-to-short side ratio of a box (default 1.5).
    """

    fill: float = 0.75
    max_side: float = 0.6
    max_aspect: float = 1.5


def _acyclic_edges(edges: list[tuple[object, object]]) -> list[tuple[object, object]]:
    kept: list[tuple[object, object]] = []
    succ: dict[object, set[object]] = {}

    def reaches(start: object, goal: object) -> bool:
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(succ.get(node, ()))
        return False

    for a, b in edges:
        if a == b or (a, b) in kept or reaches(b, a):
            continue
        kept.append((a, b))
        succ.setdefault(a, set()).add(b)
    return kept


def _ranks(edges: list[tuple[object, object]]) -> dict[object, int]:
    preds: dict[object, list[object]] = {}
    nodes: list[object] = []
    for a, b in edges:
        for n in (a, b):
            if n not in preds:
                preds[n] = []
                nodes.append(n)
        preds[b].append(a)
    rank: dict[object, int] = {}

    def visit(node: object) -> int:
        if node not in rank:
            rank[node] = 0  # placeholder; the graph is acyclic
            rank[node] = max((visit(p) + 1 for p in preds[node]), default=0)
        return rank[node]

    for node in nodes:
        visit(node)
    return rank


_H_ORDER = {"left": 0, "center": 1, "right": 2}
_V_ORDER = {"top": 0, "center": 1, "bottom": 2}


def _edges(entities: list[Entity], relations: list[Relation],
           sequences: list[tuple[str, tuple[int, ...]]]) -> tuple[list, list]:
    h: list[tuple[object, object]] = []
    v: list[tuple[object, object]] = []
    for kind, members in sequences:
        order = list(members) if kind in ("h", "v") else list(reversed(members))
        target = h if kind in ("h", "hr") else v
        target.extend(zip(order, order[1:]))
    for rel in relations:
        if rel.kind in ("left", "next"):
            h.append((rel.subject, rel.obj))
        elif rel.kind == "above":
            v.append((rel.subject, rel.obj))
    for axis, order, target, lo, hi in (("abs_h", _H_ORDER, h, "L", "R"), ("abs_v", _V_ORDER, v, "T", "B")):
        placed = [(i, getattr(e, axis)) for i, e in enumerate(entities) if getattr(e, axis)]
        for i, where in placed:  # one anchor per side: "two cups on the right" share the right part
            if where in ("left", "top"):
                target.append((i, hi))
            elif where in ("right", "bottom"):
                target.append((lo, i))
            else:
                target.extend([(lo, i), (i, hi)])
        for i, a in placed:
            for j, b in placed:
                if order[a] < order[b]:
                    target.append((i, j))
    return _acyclic_edges(h), _acyclic_edges(v)


def _components(n: int, edges: list[tuple[object, object]]) -> list[list[object]]:
    parent: dict[object, object] = {i: i for i in range(n)}

    def find(x: object) -> object:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[object, list[object]] = {}
    for node in list(parent):
        groups.setdefault(find(node), []).append(node)
    comps = [g for g in groups.values() if any(isinstance(x, int) for x in g)]
    comps.sort(key=lambda g: min(x for x in g if isinstance(x, int)))
    return comps


def _spans(comp: list[object], rank: dict[object, int], other: dict[object, int],
           h_nbrs: dict[object, set[object]], v_nbrs: dict[object, set[object]]) -> dict[object, tuple[int, int]]:
    """Column (or row) span of every real node of a component for the axis ranked by ``rank``."""
    total = max((rank[x] for x in comp if x in rank), default=0) + 1
    span: dict[object, tuple[int, int]] = {x: (rank[x], rank[x]) for x in comp if x in rank}
    for _ in range(3):
        for x in comp:
            if x in span or not isinstance(x, int):
                continue
            known = [span[y] for y in v_nbrs.get(x, ()) if y in span]
            if known:
                span[x] = (min(s[0] for s in known), max(s[1] for s in known))
    for x in comp:
        span.setdefault(x, (0, total - 1))
    return {x: s for x, s in span.items() if isinstance(x, int)} | {"__total__": (0, total - 1)}  # type: ignore[dict-item]


def _instance_boxes(slot: Rect, entity: Entity, knobs: LayoutKnobs) -> list[Rect]:
    x0, y0, x1, y1 = slot
    w, h, n = x1 - x0, y1 - y0, entity.count
    if entity.arrangement == "row":
        rows = 1
    elif entity.arrangement == "column":
        rows = n
    else:
        rows = min(range(1, n + 1), key=lambda r: (abs(math.log((w / math.ceil(n / r)) / (h / r))), r))
    cols = math.ceil(n / rows)
    boxes = []
    for k in range(n):
        r, c = divmod(k, cols)
        in_row = cols if r < rows - 1 else n - cols * (rows - 1)
        cw, ch = w / in_row, h / rows
        cx, cy = x0 + cw * (c + 0.5), y0 + ch * (r + 0.5)
        bw, bh = min(cw * knobs.fill, knobs.max_side), min(ch * knobs.fill, knobs.max_side)
        bw, bh = min(bw, bh * knobs.max_aspect), min(bh, bw * knobs.max_aspect)
        boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
    return boxes


def place_boxes(entities: list[Entity], relations: list[Relation],
                sequences: list[tuple[str, tuple[int, ...]]], knobs: LayoutKnobs | None = None) -> list[list[Rect]]:
    """One list of boxes ``(x0, y0, x1, y1)`` (canvas fractions) per entity, one box per instance."""
    knobs = knobs or LayoutKnobs()
    if not entities:
        return []
    h_edges, v_edges = _edges(entities, relations, sequences)
    h_rank, v_rank = _ranks(h_edges), _ranks(v_edges)
    h_nbrs: dict[object, set[object]] = {}
    v_nbrs: dict[object, set[object]] = {}
    for edges, nbrs in ((h_edges, h_nbrs), (v_edges, v_nbrs)):
        for a, b in edges:
            nbrs.setdefault(a, set()).add(b)
            nbrs.setdefault(b, set()).add(a)
    inside = {rel.subject: rel.obj for rel in relations if rel.kind == "inside"}
    comps = _components(len(entities), h_edges + v_edges + [(a, b) for a, b in inside.items()])
    col_spans = [_spans(c, h_rank, v_rank, h_nbrs, v_nbrs) for c in comps]
    row_spans = [_spans(c, v_rank, h_rank, v_nbrs, h_nbrs) for c in comps]
    weights = []
    for comp, cols in zip(comps, col_spans):
        ncols = cols["__total__"][1] + 1  # type: ignore[index]
        per_col = [max([math.sqrt(entities[x].count) for x in comp if isinstance(x, int) and x not in inside
                        and cols[x][0] <= c <= cols[x][1]] or [1.0]) for c in range(ncols)]
        weights.append(sum(per_col))
    total = sum(weights)
    slots: dict[int, Rect] = {}
    x_start = 0.0
    for comp, cols, rows, weight in zip(comps, col_spans, row_spans, weights):
        width = weight / total
        ncols = cols["__total__"][1] + 1  # type: ignore[index]
        nrows = rows["__total__"][1] + 1  # type: ignore[index]
        shared: dict[tuple, list[int]] = {}
        for x in sorted(x for x in comp if isinstance(x, int) and x not in inside):
            shared.setdefault((cols[x], rows[x]), []).append(x)
        for (cspan, rspan), members in shared.items():
            sx0 = x_start + width * cspan[0] / ncols
            sx1 = x_start + width * (cspan[1] + 1) / ncols
            sy0, sy1 = rspan[0] / nrows, (rspan[1] + 1) / nrows
            step = (sx1 - sx0) / len(members)
            for k, x in enumerate(members):
                slots[x] = (sx0 + k * step, sy0, sx0 + (k + 1) * step, sy1)
        x_start += width
    boxes: list[list[Rect]] = [[] for _ in entities]
    for i, entity in enumerate(entities):
        if i in slots:
            boxes[i] = _instance_boxes(slots[i], entity, knobs)
    for i, container in inside.items():  # after the containers are placed
        cx0, cy0, cx1, cy1 = boxes[container][0] if boxes[container] else (0.25, 0.25, 0.75, 0.75)
        pad_x, pad_y = (cx1 - cx0) * 0.2, (cy1 - cy0) * 0.2
        boxes[i] = _instance_boxes((cx0 + pad_x, cy0 + pad_y, cx1 - pad_x, cy1 - pad_y), entities[i],
                                   LayoutKnobs(fill=0.9, max_side=knobs.max_side, max_aspect=knobs.max_aspect))
    return boxes


def _integer_ratios(fractions: list[float], resolution: int = 20) -> list[int]:
    values = [max(1, round(f * resolution)) for f in fractions]
    divisor = math.gcd(*values)
    return [v // divisor for v in values]


def _bands(instances: list[Rect], above: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Row bands, top to bottom: boxes whose vertical extents overlap (transitively) share a band,
    except that a box stated to be above another is cut from it; a box the cut crosses goes to the
    side holding its centre (the upper side on a tie)."""
    order = sorted(range(len(instances)), key=lambda k: instances[k][1])
    bands: list[list[int]] = []
    bottom = -1.0
    for k in order:
        if bands and instances[k][1] < bottom:
            bands[-1].append(k)
            bottom = max(bottom, instances[k][3])
        else:
            bands.append([k])
            bottom = instances[k][3]
    return [part for band in bands for part in _cut_band(instances, band, above)]


def _centre_y(rect: Rect) -> float:
    return (rect[1] + rect[3]) / 2


def _cut_band(instances: list[Rect], band: list[int], above: Sequence[tuple[int, int]]) -> list[list[int]]:
    members = set(band)
    cuts = sorted({(instances[a][3] + instances[b][1]) / 2 for a, b in above if a in members and b in members
                   and _centre_y(instances[a]) < _centre_y(instances[b])})
    if not cuts:
        return [band]
    parts: dict[int, list[int]] = {}
    for k in band:
        parts.setdefault(bisect.bisect_left(cuts, _centre_y(instances[k])), []).append(k)
    return [parts[slot] for slot in sorted(parts)]


def _row_cuts(instances: list[Rect], bands: list[list[int]]) -> list[float]:
    """Where rows meet: halfway between bands, kept between the centres of their boxes."""
    cuts = [0.0]
    for upper, lower in zip(bands, bands[1:]):
        middle = (max(instances[k][3] for k in upper) + min(instances[k][1] for k in lower)) / 2
        low, high = max(_centre_y(instances[k]) for k in upper), min(_centre_y(instances[k]) for k in lower)
        cut = min(max(middle, low), high) if low < high else middle
        cuts.append(min(max(cut, cuts[-1] + 1e-3), 1.0 - 1e-3))
    return cuts + [1.0]


def _with_filler_rows(instances: list[Rect], bands: list[list[int]], cuts: list[float],
                      gap: float) -> tuple[list[list[int] | None], list[float]]:
    """Bands plus a filler row (``None``) above or below where the boxes leave more than ``gap`` of
    the height empty, so that "a cat at the top" stays at the top; the row cuts to match."""
    rows: list[list[int] | None] = list(bands)
    top, bottom = min(instances[k][1] for k in bands[0]), 1.0 - max(instances[k][3] for k in bands[-1])
    if top > gap:
        rows.insert(0, None)
        cuts = [0.0, 0.75 * top, *cuts[1:]]
    if bottom > gap:
        rows.append(None)
        cuts = [*cuts[:-1], 1.0 - 0.75 * bottom, 1.0]
    return rows, cuts


def boxes_to_split(instances: list[Rect], *, gap: float = 0.35,
                   above: Sequence[tuple[int, int]] = ()) -> tuple[str, list[int | None]]:
    """An RPG split whose cells follow the boxes, and what each cell holds (a box index or ``None``).

    Boxes whose vertical extents overlap (transitively) form one row band, except that boxes
    ``above`` says are one above the other (pairs of box indices, upper first) always get rows of
    their own; rows are cut halfway between bands, columns halfway between neighbouring boxes of a
    band (ordered by centre). Where a band leaves more than ``gap`` (default 0.35) of the width
    empty on its left or right, a filler cell (``None``: the background) keeps the boxes on their
    side, so "a dog on the right" stays on the right; a filler row does the same above or below all
    the boxes. With no boxes the split is ``"1"`` with one filler cell.
    """
    if not instances:
        return "1", [None]
    bands = _bands(instances, above)
    rows, cuts_y = _with_filler_rows(instances, bands, _row_cuts(instances, bands), gap)
    heights = _integer_ratios([b - a for a, b in zip(cuts_y, cuts_y[1:])])
    cells: list[int | None] = []
    groups = []
    for band, height in zip(rows, heights):
        if band is None:
            groups.append([height, 1])
            cells.append(None)
            continue
        band.sort(key=lambda k: ((instances[k][0] + instances[k][2]) / 2, instances[k][1]))
        members: list[int | None] = list(band)
        left, right = instances[band[0]][0], 1.0 - max(instances[k][2] for k in band)
        bounds = [(instances[k][0], instances[k][2]) for k in band]
        if left > gap:
            members.insert(0, None)
            bounds.insert(0, (0.0, left / 2))
        if right > gap:
            members.append(None)
            bounds.append((1.0 - right / 2, 1.0))
        cuts_x = [0.0] + [(a[1] + b[0]) / 2 for a, b in zip(bounds, bounds[1:])] + [1.0]
        cuts_x = [min(max(c, 0.0), 1.0) for c in cuts_x]
        for i in range(1, len(cuts_x)):  # keep cuts increasing when boxes overlap
            cuts_x[i] = max(cuts_x[i], cuts_x[i - 1] + 1e-3)
        widths = _integer_ratios([max(b - a, 1e-3) for a, b in zip(cuts_x, cuts_x[1:])])
        groups.append([height, *widths])
        cells.extend(members)
    if len(groups) == 1:
        return ",".join(str(w) for w in groups[0][1:]), cells
    return ";".join(",".join(str(v) for v in g) for g in groups), cells
