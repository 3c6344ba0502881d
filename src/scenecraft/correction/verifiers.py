"""Verifiers: read a picture back into objects and judge it against its Scene.

One interface, :class:`Verifier`: ``verify(image, scene) -> Verdict``. Three kinds:

- :class:`ToyVerifier` — the toy world's exact scorer (:func:`scenecraft.toyworld.score.score_image`):
  colour and shape of every flat-coloured object, pixel-exact. For toy-world scenes only (regions whose
  prompts name a toy colour and shape); on other scenes it runs, but reads nothing useful.
- :class:`DetectorVerifier` — an open-vocabulary detector through transformers: OWLv2
  (``Owlv2ForObjectDetection``, e.g. ``google/owlv2-base-patch16-ensemble``) or Grounding DINO
  (``AutoModelForZeroShotObjectDetection``, e.g. ``IDEA-Research/grounding-dino-tiny``), loaded with
  ``from_pretrained`` from a hub id (in the Hugging Face cache offline) or a local folder; the queries are
  the regions' prompts.
- :class:`LLMVerifier` — a multimodal LLM (OpenAI-compatible ``image_url``, Anthropic image blocks, Gemini
  ``inline_data``) sent the picture and the regions, answering the objects it sees as JSON (read with the
  bounded readers, never evaluated).

All three only find objects; :func:`~scenecraft.correction.verdict.match_regions` turns them into the same
kind of verdict. :func:`make_verifier` builds one from a spec: ``toy``, ``owlv2:PATH``,
``grounding-dino:PATH``, ``detector:PATH`` (the kind read from the folder's config), ``llm:KIND:MODEL[@URL]``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..scene import Scene
from ..scene.edits import region_rect
from .verdict import Found, Verdict, check_rect, match_regions, normalise_label

__all__ = ["Verifier", "VerifierError", "ToyVerifier", "DetectorVerifier", "LLMVerifier", "make_verifier",
           "toy_label", "VERIFIER_FORMS", "DETECTOR_KINDS"]

#: The ``--verifier`` forms :func:`make_verifier` reads.
VERIFIER_FORMS = ("toy", "owlv2:PATH", "grounding-dino:PATH", "detector:PATH", "llm:KIND:MODEL[@BASE_URL]")
#: transformers ``model_type`` values :class:`DetectorVerifier` knows, and the kind each is.
DETECTOR_KINDS = {"owlv2": "owlv2", "owlvit": "owlv2", "grounding-dino": "grounding-dino"}
_MAX_FOUND = 64
_DOWNLOAD_HINT = ("detector weights must be downloaded first, e.g. `hf download google/owlv2-base-patch16-ensemble "
                  "--local-dir ./owlv2` or `hf download IDEA-Research/grounding-dino-tiny --local-dir ./gdino`, then "
                  "pass that folder")


class VerifierError(ValueError):
    """A verifier that cannot give a verdict: a reply it cannot read, a backend without images, a bad knob."""


@runtime_checkable
class Verifier(Protocol):
    """Anything that judges a picture (PIL image or ``(H, W, 3)`` array) against the scene it was drawn from."""

    name: str

    def verify(self, image: Any, scene: Scene) -> Verdict:
        ...


def rgb_array(image: Any) -> np.ndarray:
    """A picture as ``(H, W, 3)`` uint8: a PIL image, a uint8 array, or a float array in [0, 1]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4) and 0 not in image.shape:
        if image.dtype == np.uint8:
            return image[..., :3]
        if np.issubdtype(image.dtype, np.floating):
            return (np.clip(np.nan_to_num(image[..., :3]), 0, 1) * 255).round().astype(np.uint8)
    shape = getattr(image, "shape", None)
    raise VerifierError(f"a verifier reads a PIL image or an (H, W, 3) array (uint8, or floats in [0, 1]), "
                        f"got {type(image).__name__}{'' if shape is None else ' of shape ' + str(tuple(shape))}")


def _fraction(name: str, value: Any, *, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
            low <= value <= high):
        raise VerifierError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------- the toy scorer
def toy_label(prompt: str) -> str | None:
    """The ``"colour shape"`` a toy-world region's prompt names ("a red circle" -> "red circle"; "two blue squares"
    -> "blue square"), ``None`` when it names no toy colour and shape."""
    from ..toyworld.render import COLORS, SHAPES

    words = normalise_label(prompt).split()
    colours = [w for w in words if w in COLORS]
    shapes = [w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w for w in words]
    shapes = [w for w in shapes if w in SHAPES]
    return f"{colours[-1]} {shapes[-1]}" if colours and shapes else None


@dataclass
class ToyVerifier:
    """The toy world's exact scorer as a verifier: every object's colour and shape, pixel for pixel.

    Knobs:
        min_area: components smaller than this many pixels are specks, not objects (default 16, the scorer's).
        place_tolerance: how far (a fraction of the canvas) an object's centre may lie outside its region's
            rectangle (default 0.0: inside).

    Regions whose prompt names no toy colour and shape (:func:`toy_label` is ``None``) take any object: this
    verifier is for toy-world scenes; on others it runs but reads nothing useful. It is exact on the toy world,
    so it is an upper bound on what any real detector could tell the loop.
    """

    min_area: int = 16
    place_tolerance: float = 0.0
    name: str = "toy"

    def __post_init__(self) -> None:
        if isinstance(self.min_area, bool) or not isinstance(self.min_area, int) or not 1 <= self.min_area <= 4096:
            raise VerifierError(f"min_area must be a whole number of pixels in [1, 4096], got {self.min_area!r}")
        _fraction("place_tolerance", self.place_tolerance)

    def find(self, image: Any) -> list[Found]:
        """The objects in ``image``, labelled ``"colour shape"``, scored by their shape's fit (IoU)."""
        from ..toyworld.score import score_image

        pixels = rgb_array(image)
        height, width = pixels.shape[:2]
        return [Found(f"{d.color} {d.shape}", (d.bbox[0] / width, d.bbox[1] / height, d.bbox[2] / width,
                                               d.bbox[3] / height), float(d.shape_iou))
                for d in score_image(pixels, min_area=self.min_area)]

    def verify(self, image: Any, scene: Scene) -> Verdict:
        return match_regions(scene, self.find(image), [toy_label(r.prompt) for r in scene.regions],
                             verifier=self.name, place_tolerance=self.place_tolerance)


# ----------------------------------------------------------------------------------------------- detectors
def _nms(found: list[Found], iou: float) -> list[Found]:
    """Class-agnostic non-maximum suppression: the best-scored of boxes overlapping more than ``iou``."""
    kept: list[Found] = []
    for item in sorted(found, key=lambda f: -f.score):
        if all(_iou(item.box, other.box) <= iou for other in kept):
            kept.append(item)
    return kept


def _iou(a: tuple, b: tuple) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _closest_query(label: str, queries: list[str]) -> str:
    """The query whose words ``label`` (a Grounding DINO phrase) shares most (Jaccard >= 0.5), else ``label``."""
    words = set(normalise_label(label).split())
    best, score = label, 0.0
    for query in queries:
        other = set(normalise_label(query).split())
        overlap = len(words & other) / max(len(words | other), 1)
        if overlap > score:
            best, score = query, overlap
    return best if score >= 0.5 else label


def _clip_box(box: list[float], width: float, height: float) -> tuple[float, float, float, float] | None:
    x0, y0, x1, y1 = (min(max(v / s, 0.0), 1.0) for v, s in zip(box, (width, height, width, height)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass
class DetectorVerifier:
    """An open-vocabulary detector (OWLv2 or Grounding DINO through transformers) as a verifier.

    Knobs:
        model: a local folder or a hub id (offline: one in the Hugging Face cache) for ``from_pretrained`` of
            ``AutoProcessor`` and ``AutoModelForZeroShotObjectDetection``.
        kind: ``"owlv2"`` or ``"grounding-dino"``; ``None`` (default) reads it from the model's config.
        threshold: the lowest box score kept (default 0.2; OWLv2's post-processing default is 0.1, Grounding
            DINO's 0.25).
        text_threshold: Grounding DINO's per-token score for a phrase (default 0.25, its own default).
        nms_iou: boxes overlapping a better-scored one more than this are dropped, whatever their label
            (default 0.5): a detector often finds one object under several queries.
        place_tolerance: how far (a fraction of the canvas) an object's centre may lie outside its region's
            rectangle (default 0.05: detectors' boxes are loose).
        extra_queries: more labels to look for besides the regions' prompts (default none), e.g. the objects a
            negative prompt excludes, or other colours of the same object to tell a wrong colour.
        device: a torch device (default: the best available, as for pipelines).
        sam_model: a SAM folder or hub id (``facebook/sam-vit-base``; default ``None``: boxes only). Each object
            found is then segmented by SAM prompted with its box (:attr:`Found.mask`), and the correction loop
            clears its pixels rather than its whole box.

    Each region expects its own prompt as the label. The models are loaded on the first ``verify``.
    """

    model: str | Path
    kind: str | None = None
    threshold: float = 0.2
    text_threshold: float = 0.25
    nms_iou: float = 0.5
    place_tolerance: float = 0.05
    extra_queries: tuple[str, ...] = ()
    device: str | None = None
    sam_model: str | Path | None = None
    name: str = "detector"
    _detector: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _sam: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in ("owlv2", "grounding-dino"):
            raise VerifierError(f"kind must be owlv2, grounding-dino or None (read from the model), got {self.kind!r}")
        for knob in ("threshold", "text_threshold", "nms_iou", "place_tolerance"):
            _fraction(knob, getattr(self, knob))
        if isinstance(self.extra_queries, str) or not all(isinstance(q, str) and q.strip()
                                                          for q in self.extra_queries):
            raise VerifierError("extra_queries must be a list of non-empty labels")
        if self.sam_model is not None and (not isinstance(self.sam_model, (str, Path)) or not str(self.sam_model).strip()):
            raise VerifierError(f"sam_model must be a SAM folder or hub id, got {self.sam_model!r}")

    def source(self) -> str:
        """The folder or hub id ``from_pretrained`` is given; a folder named that does not exist is a ModelLoadError
        (checked before anything loads)."""
        from ..generation.loading import ModelLoadError

        folder = Path(self.model).expanduser()
        if folder.exists():
            return str(folder)
        if str(self.model).startswith((".", "/", "~")) or str(self.model).count("/") > 1:
            raise ModelLoadError(f"the detector folder {str(self.model)!r} does not exist; {_DOWNLOAD_HINT}")
        return str(self.model)

    def load(self) -> None:
        """Load the processor and the model (once)."""
        if self._detector is not None:
            return
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from ..generation.loading import ModelLoadError, pick_device

        name = self.source()
        try:
            processor = AutoProcessor.from_pretrained(name)
            detector = AutoModelForZeroShotObjectDetection.from_pretrained(name)
        except (OSError, ValueError, KeyError) as error:
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            raise ModelLoadError(f"could not load the detector {name!r} ({type(error).__name__}: {reason}); "
                                 f"{_DOWNLOAD_HINT}") from error
        model_type = getattr(detector.config, "model_type", None)
        kind = DETECTOR_KINDS.get(model_type)
        if kind is None:
            raise ModelLoadError(f"the detector {name!r} is a {model_type!r} model; DetectorVerifier runs "
                                 f"{', '.join(sorted(DETECTOR_KINDS))}")
        if self.kind is not None and self.kind != kind:
            raise ModelLoadError(f"the detector {name!r} is a {kind} model, not {self.kind}")
        self.kind, self._processor = kind, processor
        self._detector = detector.to(pick_device(self.device)).eval()

    def queries(self, scene: Scene) -> list[str]:
        """The labels asked for: the regions' prompts, then ``extra_queries``, each once."""
        return list(dict.fromkeys([r.prompt.strip() for r in scene.regions] + [q.strip() for q in self.extra_queries]))

    def find(self, image: Any, queries: list[str]) -> list[Found]:
        """The objects in ``image`` among ``queries``, each labelled with a query (after NMS)."""
        import torch
        from PIL import Image

        self.load()
        picture = Image.fromarray(rgb_array(image))
        width, height = picture.size
        if not queries:
            return []
        text = ". ".join(normalise_label(q) for q in queries) + "." if self.kind == "grounding-dino" else [queries]
        try:
            inputs = self._processor(images=picture, text=text, return_tensors="pt")
        except ImportError as error:  # e.g. OWLv2's PIL image processor resizes with scipy
            reason = " ".join(str(error).split())[:300]
            raise VerifierError(f"the detector's processor needs a package this environment lacks: {reason}") from None
        device = next(self._detector.parameters()).device
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.no_grad():
            outputs = self._detector(**inputs)
        return _nms(self._read(outputs, inputs, queries, width, height), self.nms_iou)[:_MAX_FOUND]

    def _read(self, outputs, inputs, queries: list[str], width: int, height: int) -> list[Found]:
        if self.kind == "grounding-dino":
            (result,) = self._processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.threshold, text_threshold=self.text_threshold,
                target_sizes=[(height, width)])
            labels = [_closest_query(str(label), queries) for label in result["text_labels"]]
        else:  # OWLv2 pads the picture to a square before it looks: boxes are in the padded square
            side = max(width, height)
            (result,) = self._processor.post_process_grounded_object_detection(
                outputs, threshold=self.threshold, target_sizes=[(side, side)], text_labels=[queries])
            labels = [str(label) for label in result["text_labels"]]
        found = []  # boxes in pixels (OWLv2: of the padded square, whose top-left is the picture's)
        for label, score, box in zip(labels, result["scores"].tolist(), result["boxes"].tolist()):
            clipped = _clip_box(box, width, height)
            if clipped is not None and label:
                found.append(Found(label, clipped, float(score)))
        return found

    def segment(self, image: Any, found: list[Found]) -> list[Found]:
        """``found`` with each object's SAM mask (prompted with its box), when ``sam_model`` is set."""
        if self.sam_model is None or not found:
            return found
        from ..generation.loading import pick_device
        from ..generation.sam import SamMaskRefiner

        if self._sam is None:
            self._sam = SamMaskRefiner(str(self.sam_model), device=pick_device(self.device))
        pixels = rgb_array(image)
        height, width = pixels.shape[:2]
        boxes = [(b[0] * width, b[1] * height, b[2] * width, b[3] * height) for b in (item.box for item in found)]
        masks = self._sam.box_masks(pixels, boxes)
        return [replace(item, mask=mask) for item, mask in zip(found, masks)]

    def verify(self, image: Any, scene: Scene) -> Verdict:
        found = self.segment(image, self.find(image, self.queries(scene)))
        return match_regions(scene, found, [r.prompt for r in scene.regions], verifier=f"{self.name}:{self.kind}",
                             place_tolerance=self.place_tolerance)


# ----------------------------------------------------------------------------------------------- LLMs
_SYSTEM = """You check a picture against the scene it was drawn from.
The scene's regions are given as JSON: each has an id, a prompt (what it should show) and a box
[x0, y0, x1, y1] in fractions of the picture (x to the right, y downwards, 0 to 1).
List every object you see in the picture, whether a region asks for it or not, with its box in the same
fractions. For each object say which region it is meant for ("region": the id, or null for an object no
region asks for) and whether it looks as that region's prompt says ("matches": true or false: the kind of
object, its colour and its other attributes).
Answer with one JSON object and nothing else:
{"objects": [{"label": "a red circle", "box": [0.1, 0.2, 0.4, 0.5], "region": "r1", "matches": true}]}"""


@dataclass
class LLMVerifier:
    """A multimodal LLM as a verifier: it is sent the picture and the scene's regions and answers the objects.

    Knobs:
        backend: an ``--llm`` spec (``openai:gpt-4o``, ``anthropic:claude-sonnet-4-5``, ``gemini:gemini-2.0-flash``,
            ``openai:MODEL@http://host:port/v1``) or a backend object with ``complete_with_image``; the local
            backend does not take images.
        retries: replies that cannot be read are sent back with the error this many times (default 1, at most 3).
        max_tokens: the reply's length limit (default 1024).
        max_side: pictures larger than this many pixels per side are sent scaled down (default 1024).
        place_tolerance: as for :class:`DetectorVerifier` (default 0.05).
        timeout, transport_retries: per request, as for planning (defaults 60 s and 2).

    The reply is ``{"objects": [{"label", "box", "region", "matches"}]}`` (read with the bounded JSON
    reader, never evaluated): an object meant for a region that matches it takes the region's prompt as its
    label; one that does not keeps its own label (a wrong attribute where it lies in the region's box).
    """

    backend: Any
    retries: int = 1
    max_tokens: int = 1024
    max_side: int = 1024
    place_tolerance: float = 0.05
    timeout: float = 60.0
    transport_retries: int = 2
    name: str = "llm"

    def __post_init__(self) -> None:
        from ..planning.backends import make_backend

        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 3:
            raise VerifierError(f"retries must be a whole number in 0..3, got {self.retries!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or not (
                16 <= self.max_tokens <= 16384):
            raise VerifierError(f"max_tokens must be a whole number in 16..16384, got {self.max_tokens!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or not 16 <= self.max_side <= 4096:
            raise VerifierError(f"max_side must be a whole number of pixels in 16..4096, got {self.max_side!r}")
        _fraction("place_tolerance", self.place_tolerance)
        if isinstance(self.backend, str):
            self.backend = make_backend(self.backend, timeout=self.timeout, transport_retries=self.transport_retries)
        if not callable(getattr(self.backend, "complete_with_image", None)):
            spec = getattr(self.backend, "spec", type(self.backend).__name__)
            raise VerifierError(f"the LLM backend {spec} does not accept images; an LLM verifier needs one that does: "
                                "openai:MODEL (or an OpenAI-compatible server with a vision model), anthropic:MODEL "
                                "or gemini:MODEL")
        self.name = f"llm:{getattr(self.backend, 'spec', 'backend')}"

    def _png(self, image: Any) -> bytes:
        from PIL import Image

        picture = Image.fromarray(rgb_array(image))
        if max(picture.size) > self.max_side:
            scale = self.max_side / max(picture.size)
            picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def request(self, scene: Scene) -> list[dict[str, str]]:
        """The chat messages sent (the picture rides beside the last one)."""
        import json

        scene = scene.with_ids()
        regions = [{"id": r.id, "prompt": r.prompt, "box": [round(v, 3) for v in region_rect(scene, r)]}
                   for r in scene.regions]
        text = f"Scene prompt: {scene.prompt}\nRegions: {json.dumps(regions, ensure_ascii=False)}\n" \
               "List the objects in the picture as JSON."
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": text}]

    def verify(self, image: Any, scene: Scene) -> Verdict:
        scene = scene.with_ids()
        png = self._png(image)
        messages = self.request(scene)
        for attempt in range(self.retries + 1):
            reply = self.backend.complete_with_image(messages, png, max_tokens=self.max_tokens)
            try:
                found = read_objects(reply, scene)
            except ValueError as error:
                if attempt == self.retries:
                    raise VerifierError(f"{self.name} gave no readable list of objects in {attempt + 1} "
                                        f"attempt(s): {error}") from None
                messages = messages + [{"role": "assistant", "content": str(reply)[:4000]},
                                       {"role": "user", "content": f"That reply was rejected: {error}. Answer with "
                                                                   "the JSON object only."}]
                continue
            return match_regions(scene, found, [r.prompt for r in scene.regions], verifier=self.name,
                                 place_tolerance=self.place_tolerance)
        raise AssertionError("unreachable")  # pragma: no cover


def read_objects(text: Any, scene: Scene) -> list[Found]:
    """The objects of an LLM verifier's reply (``{"objects": [...]}``); a ValueError naming what is wrong.

    Bounded: the reply's length (:data:`~scenecraft.planning.readers.MAX_REPLY_CHARS`), the JSON's size, depth
    and digits (:func:`~scenecraft.scene.load_json`), at most 64 objects, labels of at most 200 characters.
    """
    from ..planning.readers import extract_json_object
    from ..scene import load_json

    data = load_json(extract_json_object(text), what="verifier reply")
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise ValueError('the reply must be {"objects": [...]}')
    items = data["objects"]
    if len(items) > _MAX_FOUND:
        raise ValueError(f"the reply lists {len(items)} objects, more than the {_MAX_FOUND} allowed")
    prompts = {r.id: r.prompt for r in scene.with_ids().regions}
    return [_read_object(item, index, prompts) for index, item in enumerate(items)]


def _read_object(item: Any, index: int, prompts: dict[str, str]) -> Found:
    where = f"objects[{index}]"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with label and box")
    label = item.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > 200:
        raise ValueError(f"{where}.label must be a non-empty string of at most 200 characters")
    box = check_rect(f"{where}.box", item.get("box"))
    region, matches = item.get("region"), item.get("matches", True)
    if region is not None and (not isinstance(region, str) or region not in prompts):
        raise ValueError(f"{where}.region must be null or one of the ids {sorted(prompts)[:20]}, got "
                         f"{str(region)[:40]!r}")
    if not isinstance(matches, bool):
        raise ValueError(f"{where}.matches must be true or false")
    score = item.get("score", 1.0)
    score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) and (
        0 <= score <= 1) else 1.0
    if region is not None and matches:
        label = prompts[region]
    elif region is not None and normalise_label(label) == normalise_label(prompts[region]):
        label = f"{label} (not as asked)"  # it does not match: its label must not be the region's
    return Found(label.strip(), box, score)


# ----------------------------------------------------------------------------------------------- specs
def make_verifier(spec: str, *, device: str | None = None, **knobs: Any) -> Verifier:
    """The verifier a ``--verifier`` spec names (see :data:`VERIFIER_FORMS`); ``knobs`` go to its class.

    ``toy``; ``owlv2:PATH`` / ``grounding-dino:PATH`` / ``detector:PATH`` (PATH a folder or a hub id; ``detector``
    reads the kind from the config); ``llm:KIND:MODEL[@BASE_URL]`` (an LLM backend that takes images).
    Nothing is loaded until the first ``verify``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise VerifierError(f"a verifier spec must be one of {', '.join(VERIFIER_FORMS)}; got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "toy" and not rest:
        return ToyVerifier(**knobs)
    if kind in ("owlv2", "grounding-dino", "detector"):
        if not rest.strip():
            raise VerifierError(f"--verifier {spec!r} names no model: write {kind}:PATH (a folder or a hub id)")
        return DetectorVerifier(rest.strip(), kind=None if kind == "detector" else kind, device=device, **knobs)
    if kind == "llm":
        if not rest.strip():
            raise VerifierError(f"--verifier {spec!r} names no LLM: write llm:openai:gpt-4o (a backend that takes "
                                "images)")
        return LLMVerifier(rest.strip(), **knobs)
    raise VerifierError(f"unknown verifier {spec!r}; the forms are {', '.join(VERIFIER_FORMS)}")
