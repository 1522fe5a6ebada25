"""The nuclei measures (trainable.measures) against values worked out by hand on small label maps: a split nucleus, a
merged pair, a missed one, a false positive, a pair at exactly IoU 0.5, and all of them in one map."""

import numpy as np
import pycocotools.mask as mask_util
import pytest

from trainable.measures import MEASURES, label_map, mean_over_tiles, measures, rle_label_map


def maps(true_boxes: list, pred_boxes: list, shape=(4, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Two label maps from lists of (rows, cols) slices, one label per entry (1, 2, ...)."""
    out = []
    for boxes in (true_boxes, pred_boxes):
        m = np.zeros(shape, np.int32)
        for label, slices in enumerate(boxes, start=1):
            for rows, cols in slices:
                m[rows, cols] = label
        out.append(m)
    return out[0], out[1]


S = slice
# name: (true objects, predicted objects, the measures worked out by hand)
CASES = {
    # A 10-px nucleus split 6 + 4: the 6 matches (IoU 0.6), the 4 is a false positive (IoU 0.4).
    # AJI: 6 / (10 + the unpaired 4).
    "split": (
        [[(S(0, 2), S(0, 5))]],
        [[(S(0, 2), S(0, 3))], [(S(0, 2), S(3, 5))]],
        dict(precision=1 / 2, recall=1, f1=2 / 3, sq=0.6, pq=0.4, aji=6 / 14, dice=1.0),
    ),
    # A 6-px and a 2-px nucleus merged into one 8-px prediction: the 6 matches (IoU 0.75), the 2 is missed.
    # AJI: both true nuclei pair with the merged one: (6 + 2) / (8 + 8).
    "merged": (
        [[(S(0, 2), S(0, 3))], [(S(0, 2), S(3, 4))]],
        [[(S(0, 2), S(0, 4))]],
        dict(precision=1, recall=1 / 2, f1=2 / 3, sq=0.75, pq=0.5, aji=8 / 16, dice=1.0),
    ),
    # Two 4-px nuclei, one found exactly: AJI 4 / (4 + the missed 4); Dice 2 x 4 / (8 + 4).
    "missed": (
        [[(S(0, 2), S(0, 2))], [(S(0, 2), S(4, 6))]],
        [[(S(0, 2), S(0, 2))]],
        dict(precision=1, recall=1 / 2, f1=2 / 3, sq=1.0, pq=2 / 3, aji=4 / 8, dice=8 / 12),
    ),
    # One 4-px nucleus found exactly, and a 4-px prediction on background.
    "false positive": (
        [[(S(0, 2), S(0, 2))]],
        [[(S(0, 2), S(0, 2))], [(S(2, 4), S(4, 6))]],
        dict(precision=1 / 2, recall=1, f1=2 / 3, sq=1.0, pq=2 / 3, aji=4 / 8, dice=8 / 12),
    ),
    # IoU exactly 0.5 is no match (the field's rule is IoU > 0.5); AJI still pairs them: 2 / 4.
    "half": (
        [[(S(0, 2), S(0, 2))]],
        [[(S(0, 2), S(0, 1))]],
        dict(precision=0, recall=0, f1=0, sq=0, pq=0, aji=2 / 4, dice=4 / 6),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_each_measure_matches_the_value_worked_out_by_hand(name):
    true_objects, pred_objects, expected = CASES[name]
    got = measures(*maps(true_objects, pred_objects))
    assert set(got) == set(MEASURES)
    assert got == pytest.approx(expected, abs=1e-6), name


def test_the_cases_side_by_side_in_one_map_are_matched_as_a_whole():
    """The five cases next to each other: 4 matches, 3 false positives, 3 misses over the map; AJI's sums add up."""

    def shift(objects: list, by: int) -> list:
        return [[(rows, S(c.start + by, c.stop + by)) for rows, c in o] for o in objects]

    true_objects, pred_objects = [], []
    for k, (t, p, _) in enumerate(CASES.values()):
        true_objects += shift(t, 8 * k)
        pred_objects += shift(p, 8 * k)
    got = measures(*maps(true_objects, pred_objects, shape=(4, 40)))
    sq = (0.6 + 0.75 + 1 + 1) / 4
    expected = dict(precision=4 / 7, recall=4 / 7, f1=8 / 14, sq=sq, pq=4 * sq / 7, aji=24 / 50)
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-6)


def test_aji_pairs_each_nucleus_with_its_highest_iou_prediction_as_monuseg_defines_it():
    """A 9-px nucleus: B covers 4 px of it and nothing else (IoU 4/9), A the other 5 px and 30 more (IoU 5/39).
    MoNuSeg pairs the nucleus with B: 4 / (9 + A's 35) = 0.0909; pairing by largest intersection (A) would give
    5 / (39 + 4) = 0.1163."""
    true, pred = maps(
        [[(S(0, 3), S(0, 3))]],
        [[(S(2, 3), S(0, 3)), (S(0, 2), S(2, 3)), (S(0, 3), S(3, 10)), (S(3, 6), S(0, 3))], [(S(0, 2), S(0, 2))]],
        shape=(6, 10),
    )
    assert (pred == 1).sum() == 35 and (pred == 2).sum() == 4
    assert measures(true, pred)["aji"] == pytest.approx(4 / 44)


def test_a_maintained_implementation_agrees_on_the_hand_worked_cases():
    """cellseg-metrics (HoVer-Net's definitions in numpy) gives the same PQ, SQ, F1 and, where the largest
    intersection is also the highest IoU (every case here), the same AJI."""
    import cellseg_metrics

    for name, (t, p, _) in CASES.items():
        true, pred = maps(t, p)
        ours = measures(true, pred)
        theirs = cellseg_metrics.panoptic_quality(true, pred)
        assert (ours["pq"], ours["sq"], ours["f1"]) == pytest.approx((theirs["pq"], theirs["sq"], theirs["dq"])), name
        assert ours["aji"] == pytest.approx(cellseg_metrics.aggregated_jaccard_index(true, pred)), name


def test_detections_painted_lowest_score_first_give_each_pixel_to_the_higher_score():
    shape = (6, 6)
    low = np.zeros(shape, bool)
    low[0:4, 0:4] = True
    high = np.zeros(shape, bool)
    high[2:6, 2:6] = True
    painted = label_map(shape, [(low, (0, 0, 4, 4)), (high, (2, 2, 4, 4))])  # lowest score first
    assert (painted[2:6, 2:6] == 2).all() and (painted[0:2, 0:4] == 1).all() and (painted[2:4, 0:2] == 1).all()
    assert (painted == 1).sum() == 12 and (painted == 2).sum() == 16
    # From COCO RLE (what validation and export hold), boxes from the masks themselves: the same map.
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in (low, high)]
    assert (rle_label_map(shape, rles) == painted).all()


def test_equal_scores_give_the_pixel_to_the_detection_listed_first_in_both_maps():
    """The measures' map (evaluate.predicted_label_map) and the exported one (instance_formats.tile_label_map)
    resolve an overlap of two equal scores alike: to the detection listed first, as the submission orders them."""
    from trainable.evaluate import predicted_label_map
    from trainable.instance_formats import tile_label_map

    shape = (6, 6)
    a, b = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    a[0:4, 0:4], b[2:6, 2:6] = 1, 1
    dets = [{"segmentation": mask_util.encode(np.asfortranarray(m)), "score": 1.0} for m in (a, b)]
    exported, seen = tile_label_map(shape, dets), predicted_label_map(shape, dets)
    assert exported[3, 3] == 1 and (exported == 1).sum() == 16 and (exported == 2).sum() == 12
    pairs = np.unique(np.stack([exported.ravel(), seen.ravel()]), axis=1)  # background and two nuclei, alike
    assert ((exported > 0) == (seen > 0)).all() and pairs.shape[1] == 3


def test_the_dataset_figure_is_the_mean_over_tiles():
    a = measures(*maps(*CASES["split"][:2]))
    b = measures(*maps(*CASES["missed"][:2]))
    mean = mean_over_tiles([a, b])
    assert mean["pq"] == pytest.approx((0.4 + 2 / 3) / 2) and mean["aji"] == pytest.approx((6 / 14 + 0.5) / 2)
