"""Verifiers: the matching every verifier shares, the toy scorer as a verifier, open-vocabulary detectors through
tiny random OWLv2 and Grounding DINO folders (plumbing only: random weights), specs, and the correction planner."""

import json

import numpy as np
import pytest

from scenecraft.correction import (
    DetectorVerifier, Found, LLMVerifier, ToyVerifier, Verdict, VerifierError, make_verifier, match_regions,
    normalise_label, toy_label,
)
from scenecraft.correction.loop import plan_correction, round_seed
from scenecraft.scene import Box, Region, Scene
from scenecraft.toyworld.render import ShapeObject, draw

LEFT, RIGHT, BOTTOM = (0.05, 0.1, 0.45, 0.5), (0.55, 0.1, 0.95, 0.5), (0.3, 0.55, 0.7, 0.95)


def scene(*regions):
    return Scene(prompt=" and ".join(p for p, _ in regions), width=64, height=64,
                 regions=[Region(p, Box(*b)) for p, b in regions])


TWO = scene(("a red circle", LEFT), ("a blue square", RIGHT))


def found(label, box, score=1.0):
    return Found(label, box, score)


def kinds(verdict):
    return [(p.kind, p.region) for p in verdict.problems]


# ----------------------------------------------------------------------------------------------- matching
def test_every_region_with_its_object_in_its_box_passes():
    objects = [found("blue square", (0.6, 0.2, 0.9, 0.4)), found("Red circle.", (0.1, 0.2, 0.4, 0.4))]
    verdict = match_regions(TWO, objects, ["red circle", "blue square"])
    assert verdict.passed and verdict.problems == () and verdict.describe() == "passed"
    assert [f.region for f in verdict.found] == ["r2", "r1"]


def test_missing_extra_attribute_and_place_are_named_with_their_region_or_box():
    missing = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4))], ["red circle", "blue square"])
    assert kinds(missing) == [("missing", "r2")] and missing.problems[0].expected == "a blue square"
    stray = (0.3, 0.6, 0.5, 0.8)
    extra = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)), found("blue square", (0.6, 0.2, 0.9, 0.4)),
                                found("yellow triangle", stray)], ["red circle", "blue square"])
    assert kinds(extra) == [("extra", None)] and extra.problems[0].box == stray
    assert extra.found[2].region is None
    wrong = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)), found("green square", (0.6, 0.2, 0.9, 0.4))],
                          ["red circle", "blue square"])
    assert kinds(wrong) == [("attribute", "r2")] and wrong.problems[0].label == "green square"
    assert "drawn as 'green square'" in wrong.describe()
    away = (0.6, 0.6, 0.9, 0.9)
    place = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)), found("blue square", away)],
                          ["red circle", "blue square"])
    assert kinds(place) == [("place", "r2")] and place.problems[0].box == away
    assert not place.passed and place.found[1].region == "r2"


def test_place_tolerance_lets_a_centre_lie_just_outside():
    just_out = (0.4, 0.2, 0.56, 0.4)  # centre 0.48, the left box ends at 0.45
    objects = [found("red circle", just_out), found("blue square", (0.6, 0.2, 0.9, 0.4))]
    assert kinds(match_regions(TWO, objects, ["red circle", "blue square"])) == [("place", "r1")]
    assert match_regions(TWO, objects, ["red circle", "blue square"], place_tolerance=0.05).passed


def test_objects_inside_a_box_are_paired_first_and_a_misplaced_twin_is_out_of_place():
    three = scene(("a red circle", LEFT), ("a red circle", RIGHT), ("a red circle", BOTTOM))
    objects = [found("red circle", (0.6, 0.2, 0.9, 0.4)), found("red circle", (0.1, 0.2, 0.4, 0.4)),
               found("red circle", (0.15, 0.25, 0.3, 0.45))]  # two in the left box, none below
    verdict = match_regions(three, objects, ["red circle"] * 3)
    assert kinds(verdict) == [("place", "r3")]
    assert [f.region for f in verdict.found] in (["r2", "r1", "r3"], ["r2", "r3", "r1"])


def test_a_region_without_an_expected_label_takes_any_object_after_the_labelled_ones():
    mixed = scene(("a cat", LEFT), ("a red circle", RIGHT))
    # both in the cat's box: the circle is the labelled region's (out of its place), the cat's region takes the dog
    verdict = match_regions(mixed, [found("red circle", (0.1, 0.2, 0.2, 0.3)), found("dog", (0.25, 0.2, 0.4, 0.4))],
                            [None, "red circle"])
    assert kinds(verdict) == [("place", "r2")] and [f.region for f in verdict.found] == ["r2", "r1"]


def test_matching_refuses_bad_arguments():
    with pytest.raises(ValueError, match="one label per region \\(2\\), got 1"):
        match_regions(TWO, [], ["red circle"])
    with pytest.raises(ValueError, match="place_tolerance must be a fraction"):
        match_regions(TWO, [], ["a", "b"], place_tolerance=2)


def test_labels_are_compared_without_case_articles_or_punctuation():
    assert normalise_label("  An Orange, triangle. ") == "orange triangle"
    assert toy_label("a red circle") == "red circle" and toy_label("two blue squares") == "blue square"
    assert toy_label("a cat") is None and toy_label("a big circle") is None


def test_a_verdict_is_json():
    verdict = match_regions(TWO, [found("green square", (0.6, 0.2, 0.9, 0.4))], ["red circle", "blue square"])
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["passed"] is False and [p["kind"] for p in data["problems"]] == ["missing", "attribute"]


# ----------------------------------------------------------------------------------------------- the toy scorer
def picture(*objects):
    return draw([ShapeObject(c, s, box) for c, s, box in objects])


def test_the_toy_verifier_reads_drawn_pictures_exactly():
    good = picture(("red", "circle", (6, 10, 24, 28)), ("blue", "square", (40, 10, 58, 28)))
    verifier = ToyVerifier()
    assert verifier.verify(good, TWO).passed
    from PIL import Image

    assert verifier.verify(Image.fromarray(good), TWO).passed  # PIL pictures too
    assert verifier.verify(good.astype(np.float32) / 255, TWO).passed  # and floats in [0, 1]
    wrong = picture(("red", "circle", (6, 10, 24, 28)), ("green", "square", (40, 10, 58, 28)),
                    ("yellow", "triangle", (24, 40, 40, 56)))
    assert kinds(verifier.verify(wrong, TWO)) == [("extra", None), ("attribute", "r2")]
    moved = picture(("red", "circle", (6, 10, 24, 28)), ("blue", "square", (40, 40, 58, 58)))
    verdict = verifier.verify(moved, TWO)
    assert kinds(verdict) == [("place", "r2")] and verdict.verifier == "toy"
    box = verdict.problems[0].box
    assert box == pytest.approx((40 / 64, 40 / 64, 58 / 64, 58 / 64))


def test_the_toy_verifier_refuses_what_is_not_a_picture():
    with pytest.raises(VerifierError, match="got ndarray of shape \\(64, 64\\)"):
        ToyVerifier().verify(np.zeros((64, 64)), TWO)
    with pytest.raises(VerifierError, match="min_area"):
        ToyVerifier(min_area=0)


# ----------------------------------------------------------------------------------------------- correction plans
def test_a_correction_plan_redraws_wrong_regions_under_round_ids_and_clears_strays():
    stray = (0.3, 0.7, 0.45, 0.85)
    verdict = match_regions(TWO, [found("green square", (0.6, 0.2, 0.9, 0.4)), found("yellow triangle", stray)],
                            ["red circle", "blue square"])
    plan = plan_correction(TWO, verdict, 1, margin=0.0)
    assert plan.regenerate == ("r1", "r2") and plan.clear == (stray,)
    assert [r.id for r in plan.scene.regions] == ["r1.fix1", "r2.fix1"]
    assert [r.prompt for r in plan.scene.regions] == ["a red circle", "a blue square"]
    assert plan.mask.shape == (64, 64) and plan.mask.dtype == np.float32
    assert plan.mask[7:32, 4:28].all() and plan.mask[45:54, 20:28].all()  # the left box, the stray box
    assert plan.mask[60, 60] == 0 and plan.mask[35, 2] == 0
    later = plan_correction(TWO, match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4))],
                                               ["red circle", "blue square"]), 2, render_ids=plan.render_ids)
    assert later.regenerate == ("r2",) and [r.id for r in later.scene.regions] == ["r1.fix1", "r2.fix2"]
    assert later.render_ids == {"r1": "r1.fix1", "r2": "r2.fix2"}


def test_a_stray_redraws_the_region_holding_it_and_its_twin_and_a_grown_box_stays_on_the_canvas():
    verdict = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)), found("blue square", (0.6, 0.2, 0.9, 0.4)),
                                  found("red circle", (0.9, 0.4, 1.0, 0.5))], ["red circle", "blue square"])
    plan = plan_correction(TWO, verdict, 3, margin=0.05)  # r2 holds it, r1's circle is its nearest twin
    assert plan.regenerate == ("r2", "r1") and plan.clear == (pytest.approx((0.85, 0.35, 1.0, 0.55)),)


def test_a_segmented_object_is_cleared_by_its_pixels_grown_by_the_margin_not_by_its_box():
    stray_box = (0.05, 0.55, 0.95, 0.95)  # a detector's loose box over the bottom half
    pixels = np.zeros((64, 64), bool)
    pixels[40:46, 10:16] = True  # what SAM says the object is
    verdict = match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)), found("blue square", (0.6, 0.2, 0.9, 0.4)),
                                  Found("yellow triangle", stray_box, 1.0, mask=pixels)], ["red circle", "blue square"])
    assert verdict.problems[0].kind == "extra" and verdict.problems[0].mask is pixels
    plan = plan_correction(TWO, verdict, 1, margin=2 / 64)
    assert plan.clear == (pytest.approx((0.05 - 2 / 64, 0.55 - 2 / 64, 0.95 + 2 / 64, 0.95 + 2 / 64)),)
    assert plan.mask[38:48, 8:18].all() and plan.mask[37, 10] == 0 and plan.mask[40, 19] == 0  # 2 px around it
    assert plan.mask[60, 60] == 0 and plan.mask[50, 40] == 0  # the rest of the loose box stays
    boxed = plan_correction(TWO, match_regions(TWO, [found("red circle", (0.1, 0.2, 0.4, 0.4)),
                                                     found("blue square", (0.6, 0.2, 0.9, 0.4)),
                                                     found("yellow triangle", stray_box)],
                                               ["red circle", "blue square"]), 1, margin=2 / 64)
    assert boxed.mask[60, 60] == 1 and boxed.mask[50, 40] == 1  # without pixels: the whole box
    wrong_size = Found("yellow triangle", stray_box, 1.0, mask=np.ones((32, 32), bool))
    fallback = plan_correction(TWO, match_regions(TWO, [wrong_size], ["red circle", "blue square"]), 1, margin=0)
    assert fallback.mask[60, 60] == 1  # a mask of another size is not used: the box is


def test_round_seeds_differ_per_round_and_are_the_same_everywhere():
    assert round_seed(7, 1) == round_seed(7, 1) != round_seed(7, 2) != round_seed(8, 2)
    assert 0 <= round_seed(2**32 - 1, 10) < 2**32


# ----------------------------------------------------------------------------------------------- specs
def test_verifier_specs(tmp_path):
    assert isinstance(make_verifier("toy"), ToyVerifier)
    detector = make_verifier(f"owlv2:{tmp_path}", threshold=0.1)
    assert isinstance(detector, DetectorVerifier) and detector.kind == "owlv2" and detector.threshold == 0.1
    assert make_verifier(f"detector:{tmp_path}").kind is None
    for spec, message in (("nope", "unknown verifier 'nope'; the forms are toy, owlv2:PATH"),
                          ("owlv2:", "names no model"), ("llm:", "names no LLM"), ("", "must be one of"),
                          ("llm:local:/models/x", "does not accept images")):
        with pytest.raises(VerifierError, match=message):
            make_verifier(spec)
    with pytest.raises(VerifierError, match="threshold must be a number in \\[0, 1\\]"):
        DetectorVerifier(tmp_path, threshold=1.5)


def test_a_detector_folder_that_does_not_exist_says_how_to_download_one(tmp_path):
    from scenecraft.generation.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist; detector weights must be downloaded first"):
        DetectorVerifier(str(tmp_path / "missing")).verify(np.zeros((64, 64, 3), np.uint8), TWO)


# ----------------------------------------------------------------------------------------------- detectors
@pytest.fixture(scope="module")
def detector_folders(tmp_path_factory):
    from scenecraft.testing import save_tiny_grounding_dino, save_tiny_owlv2

    root = tmp_path_factory.mktemp("detectors")
    return {"owlv2": save_tiny_owlv2(root / "owlv2"), "grounding-dino": save_tiny_grounding_dino(root / "gdino")}


@pytest.mark.parametrize("kind", ["owlv2", "grounding-dino"])
def test_detectors_load_through_from_pretrained_and_give_a_verdict(detector_folders, kind):
    good = picture(("red", "circle", (6, 10, 24, 28)), ("blue", "square", (40, 10, 58, 28)))
    verifier = make_verifier(f"detector:{detector_folders[kind]}", device="cpu", threshold=0.0, text_threshold=0.0)
    verdict = verifier.verify(good, TWO)
    assert isinstance(verdict, Verdict) and verifier.kind == kind and verdict.verifier == f"detector:{kind}"
    assert verdict.found, "threshold 0 keeps every box"
    queries = {"a red circle", "a blue square"}
    for item in verdict.found:
        assert 0 <= item.box[0] < item.box[2] <= 1 and 0 <= item.box[1] < item.box[3] <= 1
        assert 0 <= item.score <= 1 and (item.region is None or item.region in ("r1", "r2"))
    if kind == "owlv2":  # every box carries one of the queries
        assert {item.label for item in verdict.found} <= queries
    assert all(p.kind in ("missing", "extra", "attribute", "place") for p in verdict.problems)
    again = make_verifier(f"{kind}:{detector_folders[kind]}", device="cpu", threshold=0.0, text_threshold=0.0)
    assert again.verify(good, TWO) == verdict  # the same folder, the same weights, the same verdict
    strict = make_verifier(f"{kind}:{detector_folders[kind]}", device="cpu", threshold=1.0)
    assert strict.verify(good, TWO).found == () and [p.kind for p in strict.verify(good, TWO).problems] == [
        "missing", "missing"]


def test_a_detector_with_sam_gives_each_object_its_pixels_and_the_plan_uses_them(detector_folders, tmp_path):
    from scenecraft.testing import save_tiny_sam

    sam = save_tiny_sam(tmp_path / "sam")
    good = picture(("red", "circle", (6, 10, 24, 28)), ("blue", "square", (40, 10, 58, 28)))
    plain = make_verifier(f"owlv2:{detector_folders['owlv2']}", device="cpu", threshold=0.0)
    segmenting = make_verifier(f"owlv2:{detector_folders['owlv2']}", device="cpu", threshold=0.0, sam_model=str(sam))
    boxes, segmented = plain.verify(good, TWO), segmenting.verify(good, TWO)
    assert segmented == boxes  # the same objects and problems: masks are extra, not compared
    assert all(item.mask is None for item in boxes.found)
    assert all(item.mask.shape == (64, 64) and item.mask.dtype == bool for item in segmented.found)
    assert all(p.mask is not None for p in segmented.problems if p.box is not None)
    plan = plan_correction(TWO, segmented, 1, margin=0.0)
    assert plan.mask.shape == (64, 64) and set(np.unique(plan.mask)) <= {0.0, 1.0}
    with pytest.raises(VerifierError, match="sam_model must be a SAM folder or hub id"):
        DetectorVerifier(detector_folders["owlv2"], sam_model="  ")


def test_a_detector_of_the_other_kind_or_no_detector_is_a_load_error(detector_folders, tmp_path):
    from scenecraft.generation.loading import ModelLoadError

    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ModelLoadError, match="is a grounding-dino model, not owlv2"):
        DetectorVerifier(detector_folders["grounding-dino"], kind="owlv2").verify(image, TWO)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="could not load the detector"):
        DetectorVerifier(str(tmp_path)).verify(image, TWO)


def test_llm_verifier_needs_a_backend_that_takes_images():
    class TextOnly:
        spec = "local:/models/tiny"

        def complete(self, messages, *, schema, max_tokens):
            return "{}"

    with pytest.raises(VerifierError, match="local:/models/tiny does not accept images; .* openai:MODEL"):
        LLMVerifier(TextOnly())


def test_split_cells_are_drawn_as_inset_boxes_so_neighbours_do_not_touch():
    from scenecraft.correction.loop import inset_cells

    split = Scene.from_split("two red circles", "1,1", ["a red circle", "a red circle"], width=64, height=64)
    boxed = inset_cells(split, 0.1)
    assert boxed.split is None and [r.prompt for r in boxed.regions] == ["a red circle"] * 2
    for cell, box in zip(split.regions, boxed.regions):
        x0, y0, x1, y1 = split.region_rect(cell)
        w, h = x1 - x0, y1 - y0
        assert box.geometry.as_list() == pytest.approx([x0 + w / 10, y0 + h / 10, x1 - w / 10, y1 - h / 10])
    left, right = (r.geometry for r in boxed.regions)
    assert left.x1 < right.x0  # a gap where the cells touched
    assert inset_cells(TWO, 0.1) is TWO
    with pytest.raises(ValueError, match="cell_inset must be a share of a cell's side in \\[0, 0.4\\], got 0.5"):
        inset_cells(split, 0.5)
