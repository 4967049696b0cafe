"""What "the same detections" means for two runs of one model: the one definition.

Two backends (torch and ONNX Runtime), two thread counts or two devices add the same floats
in different orders, so their scores differ in the last bits (~1e-7 for the float32 tiny
model on a CPU). Post-processing is exact given its inputs, but it sorts: candidates whose
scores differ by less than that come out in either order, and at the `max_detections`
cut-off one run may keep a candidate that the other dropped for its near-tied neighbour.
Comparing lists element by element therefore passes on one CPU and fails on another.

The rule, used by every comparison of two runs (runtime vs torch, export parity, the
post-processing benchmark, eval of an .onnx vs its model directory):

* Detections are matched one-to-one, in any order, with the same label, the score within
  `score_tol` and both segment bounds within `segment_tol` seconds or `segment_rtol` of the
  segment's length, whichever is larger.
* A detection may stay unmatched only where the cut-off explains it: the other run kept
  `max_detections` detections (it had no room left) and the detection's score is within
  `score_tol` of the other run's lowest kept score. Without `max_detections` every
  detection must be matched.
* mAP: per class, AP equal within `map_tol` when the class's ranking is unchanged (every
  detection matched and no two near-tied ones swapped order, across the split). A class where
  near-ties reordered may differ by at most 2 / (its ground-truth instances) per event (an
  adjacent true positive / false positive swap, or one detection in or out at the tail,
  moves one recall step's interpolated precision, and the envelope before it, by at most
  1 / npos each). See `map_bounds`.

Not covered, reported as a difference: two overlapping candidates of one class tied within
the tolerance, where the order of picks decides which one Soft-NMS decays (their segments
trade scores). It needs a tie to ~1e-7 between overlapping same-class candidates and has not
been seen; when it happens the message names the detections.

Tolerances: scores 1e-5 (~100x the float32 noise between backends, measured 1e-7 on the
test model and 1.4e-6 at worst on the quickstart model; 100x below the 1e-3 thresholds of
post-processing). Segments 1e-4 s or 1e-4 of the length: bounds are float32 regressions
times the level's stride, so their error grows with the stride that regresses long segments
(export measured 4.4e-5 of a stride at worst, and a level's segments span at least ~2
strides, so <= ~2.2e-5 of the length); 1e-4 s is a thousandth of a 10 fps frame step and
1e-4 of the length moves a tIoU by at most ~2e-4. mAP 1e-6: equal rankings give equal AP up
to float summation (~1e-15), so 1e-6 only absorbs the printing of figures.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SCORE_TOL = 1e-5
SEGMENT_TOL = 1e-4
SEGMENT_RTOL = 1e-4
MAP_TOL = 1e-6

Row = tuple[str, float, float, float]  # (label, start, end, score)


def _row(det) -> Row:
    """A detection as (label, start, end, score), from any of the project's three forms."""
    if isinstance(det, Mapping):  # ActivityNet entry {"label", "segment", "score"}
        (start, end), label, score = det["segment"], det["label"], det["score"]
    elif hasattr(det, "start_s"):  # runtime.Detection
        start, end, label, score = det.start_s, det.end_s, det.label, det.score
    elif len(det) == 4:  # (label, start, end, score), e.g. from rows_from_arrays
        label, start, end, score = det
    else:  # (label, (start, end), score)
        label, (start, end), score = det
    return label, float(start), float(end), float(score)


@dataclass
class DetectionMatch:
    """How two detection lists of one video line up.

    Attributes:
        pairs: (index in a, index in b) of matched detections.
        only_a, only_b: indices left unmatched that the cut-off explains.
        problems: why the lists are not the same detections; empty when they are.
        max_score_diff, max_segment_diff: over the matched pairs.
    """

    a: list[Row]
    b: list[Row]
    pairs: list[tuple[int, int]] = field(default_factory=list)
    only_a: list[int] = field(default_factory=list)
    only_b: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    max_score_diff: float = 0.0
    max_segment_diff: float = 0.0

    @property
    def same(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.same


def _describe(row: Row) -> str:
    label, start, end, score = row
    return f"{label} [{start:.6g}, {end:.6g}] score {score:.9g}"


def match_detections(
    a: Iterable,
    b: Iterable,
    score_tol: float = SCORE_TOL,
    segment_tol: float = SEGMENT_TOL,
    segment_rtol: float = SEGMENT_RTOL,
    max_detections: int | None = None,
) -> DetectionMatch:
    """Match the detections of one video from two runs (see the module docstring).

    Args:
        a, b: detections as dicts {"label", "segment", "score"}, runtime `Detection`s or
            (label, (start, end), score) tuples, in any order.
        score_tol: largest score difference of a matched pair.
        segment_tol: largest difference of either segment bound, in seconds ...
        segment_rtol: ... or as a fraction of the segment's length, if that is larger.
        max_detections: the post-processing cap both runs used (`PostprocessConfig`'s);
            None: no cut-off, every detection must be matched.

    Returns:
        The match; `.same` says whether they are the same detections, `.problems` why not.
    """
    rows_a, rows_b = [_row(d) for d in a], [_row(d) for d in b]
    match = DetectionMatch(rows_a, rows_b)
    free = defaultdict(list)  # label -> unmatched indices of b
    for j, row in enumerate(rows_b):
        free[row[0]].append(j)
    # Best score first, each to the closest free partner of its label within tolerance.
    for i in sorted(range(len(rows_a)), key=lambda i: -rows_a[i][3]):
        label, start, end, score = rows_a[i]
        seg_tol = max(segment_tol, segment_rtol * abs(end - start))
        best, best_cost = None, None
        for j in free[label]:
            _, sb, eb, cb = rows_b[j]
            ds, dg = abs(cb - score), max(abs(sb - start), abs(eb - end))
            if ds <= score_tol and dg <= seg_tol:
                cost = ds + dg
                if best is None or cost < best_cost:
                    best, best_cost = j, cost
        if best is None:
            match.only_a.append(i)
            continue
        free[label].remove(best)
        match.pairs.append((i, best))
        _, sb, eb, cb = rows_b[best]
        match.max_score_diff = max(match.max_score_diff, abs(cb - score))
        match.max_segment_diff = max(match.max_segment_diff, abs(sb - start), abs(eb - end))
    match.only_b = sorted(j for js in free.values() for j in js)
    for name, mine, other, others in (
        ("a", match.only_a, rows_b, "b"),
        ("b", match.only_b, rows_a, "a"),
    ):
        rows = rows_a if name == "a" else rows_b
        for i in mine:
            reason = _unexplained(rows[i], other, score_tol, max_detections)
            if reason:
                match.problems.append(f"{name}[{i}] {_describe(rows[i])}: {reason} in {others}")
    return match


def _unexplained(row: Row, other: list[Row], score_tol: float, cap: int | None) -> str:
    """Why `row`, missing from `other`, is not a near-tie at the cut-off ('' when it is)."""
    if cap is None:
        return "no match"
    if len(other) < cap:
        return f"no match, and only {len(other)} < max_detections {cap} were kept there"
    floor = min(r[3] for r in other)
    if abs(row[3] - floor) > score_tol:
        return f"no match (lowest kept score there {floor:.9g}, so not a cut-off near-tie)"
    return ""


def rows_from_arrays(segments, scores, labels) -> list[Row]:
    """Post-processing output (segments (M, 2), scores (M,), labels (M,)) as detections."""
    return [
        (label, start, end, score)
        for (start, end), score, label in zip(
            np.asarray(segments).tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist()
        )
    ]


def assert_same_detections(a, b, **tolerances) -> DetectionMatch:
    """`match_detections`, raising AssertionError with the first differences when not same."""
    match = match_detections(a, b, **tolerances)
    if not match.same:
        shown = "\n  ".join(match.problems[:8])
        more = f"\n  ... and {len(match.problems) - 8} more" if len(match.problems) > 8 else ""
        raise AssertionError(
            f"not the same detections ({len(match.a)} vs {len(match.b)}, "
            f"{len(match.pairs)} matched):\n  {shown}{more}"
        )
    return match


@dataclass
class PredictionsMatch:
    """Per-video matches of two runs over a split, and where class rankings may differ.

    Attributes:
        videos: video id -> its DetectionMatch.
        problems: every video's problems, prefixed with the video id (and missing videos).
        events: label -> near-tie events (unmatched detections at the cut-off, and pairs of
            matched detections of the label, anywhere in the split, whose order swapped).
    """

    videos: dict[str, DetectionMatch]
    problems: list[str]
    events: Counter

    @property
    def same(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.same


def match_predictions(
    a: Mapping[str, Sequence], b: Mapping[str, Sequence], **tolerances
) -> PredictionsMatch:
    """`match_detections` for every video of two {video_id: detections} runs."""
    problems = [f"video {v} only in a" for v in a if v not in b]
    problems += [f"video {v} only in b" for v in b if v not in a]
    videos = {v: match_detections(a[v], b[v], **tolerances) for v in a if v in b}
    problems += [f"{v}: {p}" for v, m in videos.items() for p in m.problems]
    events = Counter()
    scores = defaultdict(list)  # label -> (score in a, score in b) of matched pairs
    for m in videos.values():
        for i in m.only_a:
            events[m.a[i][0]] += 1
        for j in m.only_b:
            events[m.b[j][0]] += 1
        for i, j in m.pairs:
            scores[m.a[i][0]].append((m.a[i][3], m.b[j][3]))
    tol = tolerances.get("score_tol", SCORE_TOL)
    for label, pairs in scores.items():
        events[label] += _swaps(np.array(pairs), tol)
    return PredictionsMatch(videos, problems, +events)


def _swaps(pairs: np.ndarray, tol: float) -> int:
    """Pairs of (score_a, score_b) rows not ranked strictly the same way in a and in b.

    Both scores of a row are within `tol`, so only rows within 2 * tol in a can swap.
    """
    order = np.argsort(pairs[:, 0], kind="stable")
    sa, sb = pairs[order, 0], pairs[order, 1]
    count = 0
    for i in range(len(sa)):
        j = i + 1
        while j < len(sa) and sa[j] - sa[i] <= 2 * tol:
            da, db = sa[j] - sa[i], sb[j] - sb[i]
            count += int(da * db < 0 or (da == 0) != (db == 0))  # tied in both: stable order
            j += 1
    return count


def map_bounds(match: PredictionsMatch, ground_truth: Mapping[str, Sequence], tol=MAP_TOL):
    """Largest AP difference each class may show: `tol`, plus 2 / npos per near-tie event.

    Returns:
        (label -> bound on its AP difference, bound on the mAP difference).
    """
    npos = Counter(a["label"] for anns in ground_truth.values() for a in anns)
    per_class = {c: min(1.0, tol + 2 * match.events.get(c, 0) / n) for c, n in npos.items()}
    return per_class, float(np.mean(list(per_class.values())))


def assert_same_map(result_a, result_b, match: PredictionsMatch, ground_truth, tol=MAP_TOL):
    """Two DetectionResults of matched predictions agree within `map_bounds`, per class too.

    Raises:
        AssertionError: naming the class and threshold that differ beyond the bound.
    """
    assert match.same, "not the same detections:\n  " + "\n  ".join(match.problems[:8])
    per_class, overall = map_bounds(match, ground_truth, tol)
    assert tuple(result_a.thresholds) == tuple(result_b.thresholds)
    for label, bound in per_class.items():
        diff = np.abs(np.asarray(result_a.per_class[label]) - result_b.per_class[label])
        assert diff.max() <= bound, f"AP of {label} differs by {diff.max():.3g} > {bound:.3g}"
    diff = np.abs(np.asarray(result_a.mAP) - result_b.mAP).max()
    assert diff <= overall, f"mAP differs by {diff:.3g} > {overall:.3g}"
