"""Load and validate ActivityNet / THUMOS14-style annotation JSON.

The format is `{"database": {video_id: {"subset", "duration", "fps"?, "annotations":
[{"label", "segment": [start_s, end_s]}]}}}`. Every problem in a file is collected and
reported in one PbdError line, so a user fixes the file in one pass instead of one
error per run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

# Accepted subset names (case-insensitive) and the split role each one feeds, under the
# default names (`--subsets default`).
SUBSET_ROLES = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "testing": "test",
    "test": "test",
}
ROLES = ("train", "val", "test")

# What a subset may feed under `--subsets`: a split role; "train+val" (its videos train,
# and a stable-hash HELD_OUT_FRACTION of them is held out as val); "none" (left out).
SUBSET_TARGETS = (*ROLES, "train+val", "none")

# `--subsets` presets. "default" also applies the THUMOS14 rule (see `_assign_roles`): a
# file without training videos (THUMOS14's own: Validation + Test) trains on its
# validation videos, HELD_OUT_FRACTION of them held out as val.
SUBSET_PRESETS = {
    "default": SUBSET_ROLES,
    # OpenTAD's THUMOS14 file (thumos_14_anno.json) calls THUMOS's validation videos
    # "training" and its test videos "validation"; OpenTAD trains on the first and tests
    # on the second. Checkpoints are selected on videos held out of "training".
    "opentad-thumos": {"training": "train+val", "validation": "test"},
    # ActivityNet-1.3 as OpenTAD evaluates it: on "validation" ("testing" has no labels).
    "opentad-anet": {"training": "train+val", "validation": "test", "testing": "none"},
}

# Segment ends may overshoot the duration by this much without comment: durations come
# from container metadata and annotators' tools round differently (ActivityNet has many
# ends a fraction of a second past the duration).
END_TOLERANCE_S = 1.0

# Segments ending further past the duration are a policy choice, not a hard error: the
# real THUMOS14 file (tests/fixtures/thumos14.json, the ActionFormer "Thumos14-30fps"
# version) has 30 such segments in 5 videos, all starting after the video ends, by up
# to 537 s (video_test_0000270: 22 of 29 segments; also video_test_0000814,
# video_test_0001081, video_validation_0000364, video_validation_0000856). No small
# tolerance covers them. The official evaluation counts them as ground truth (so they
# are unreachable misses in every published mAP), hence the default keeps them.
PAST_END_POLICIES = ("keep", "drop", "error")

# THUMOS14 has no training subset; this share of its validation videos is held out.
HELD_OUT_FRACTION = 0.15

# A message listing thousands of problems is unreadable; the count stays exact.
MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class Annotation:
    """One labelled action instance, times in seconds."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class VideoInfo:
    """One video's metadata and its action instances."""

    video_id: str
    subset: str
    duration: float
    fps: float | None
    annotations: tuple[Annotation, ...]

    @property
    def role(self) -> str:
        """The split role ('train', 'val' or 'test') named by this video's subset under the
        default names (`Annotations.split` applies the `--subsets` mapping)."""
        return SUBSET_ROLES[self.subset.lower()]


def subset_roles(subsets: str) -> dict[str, str]:
    """The subset -> role mapping that a `--subsets` value names.

    Args:
        subsets: a preset name (SUBSET_PRESETS: default, opentad-thumos, opentad-anet), or
            comma-separated SUBSET=ROLE pairs, e.g. "training=train+val,validation=test".
            Subset names are matched case-insensitively; a role is one of SUBSET_TARGETS.

    Returns:
        Lower-case subset name -> role ("train", "val", "test", "train+val" or "none").

    Raises:
        PbdError: an unknown preset or role, a malformed or repeated pair, or both a val
            subset and a train+val subset (val would have two sources).
    """
    if not isinstance(subsets, str):
        raise PbdError(f"--subsets takes a string, got {_short(subsets)}")
    spec = subsets
    if spec in SUBSET_PRESETS:
        return dict(SUBSET_PRESETS[spec])
    if "=" not in spec:
        raise PbdError(
            f"unknown --subsets preset {spec!r}; use {', '.join(SUBSET_PRESETS)}, or "
            "SUBSET=ROLE pairs such as training=train+val,validation=test"
        )
    roles: dict[str, str] = {}
    for pair in spec.split(","):
        name, sep, role = (part.strip() for part in pair.partition("="))
        if not (sep and name):
            raise PbdError(
                f"--subsets: {pair.strip()!r} is not SUBSET=ROLE "
                "(e.g. training=train+val,validation=test)"
            )
        if role.lower() not in SUBSET_TARGETS:
            raise PbdError(
                f"--subsets {name}={role}: unknown role {role!r}; use {', '.join(SUBSET_TARGETS)}"
            )
        if name.lower() in roles:
            raise PbdError(f"--subsets maps subset {name!r} twice; give each subset once")
        roles[name.lower()] = role.lower()
    val = sorted(n for n, r in roles.items() if r == "val")
    held = sorted(n for n, r in roles.items() if r == "train+val")
    if val and held:
        raise PbdError(
            f"--subsets maps {val[0]!r} to val and {held[0]!r} to train+val: val would come "
            f"from both; map {held[0]} to train, or {val[0]} to another role"
        )
    return roles


class Annotations:
    """A validated annotation database with deterministic train/val/test splits.

    `subsets` (a `--subsets` value, see `subset_roles`) says which split role each
    annotation subset feeds.
    """

    def __init__(self, videos: dict[str, VideoInfo], subsets: str = "default"):
        self.videos = videos
        self.subsets = subsets
        self.class_names = sorted({a.label for v in videos.values() for a in v.annotations})
        self._splits = _assign_roles(videos.values(), subsets)

    @property
    def num_instances(self) -> int:
        """Total number of action instances over all videos."""
        return sum(len(v.annotations) for v in self.videos.values())

    def class_index(self) -> dict[str, int]:
        """Map each label to its index in `class_names`."""
        return {name: i for i, name in enumerate(self.class_names)}

    def split(self, role: str) -> list[VideoInfo]:
        """Videos of one split role, sorted by video id.

        Args:
            role: 'train', 'val' or 'test' (under the default names also training,
                validation or testing).

        Returns:
            The videos in that role, as the `subsets` mapping assigns them. Under the
            default names without a training subset (THUMOS14), train is the validation
            subset minus a hash-chosen ~15% held out as val.

        Raises:
            PbdError: unknown role, or no videos in that role.
        """
        default = self.subsets == "default"
        key = role.lower() if role.lower() in ROLES else None
        if key is None and default:
            key = SUBSET_ROLES.get(role.lower())
        if key is None:
            names = "" if default else f"; under --subsets {self.subsets} a split names a role"
            raise PbdError(f"unknown split '{role}' (use train, val or test{names})")
        videos = self._splits[key]
        if not videos:
            present = ", ".join(sorted({v.subset for v in self.videos.values()})) or "none"
            if default:
                where, fix = "", "pick another split or add videos with that subset"
            else:
                where = f" under --subsets {self.subsets}"
                fix = f"map a subset to {key} with --subsets"
            if key == "val":
                fix += " (or SUBSET=train+val to hold out 15% of a training subset)"
            raise PbdError(
                f"no videos in split '{role}'{where} (subsets present: {present}); {fix}"
            )
        return list(videos)

    def calibration_split(self, fraction: float = 0.1) -> list[VideoInfo]:
        """A deterministic part of the train role, for post-training calibration.

        Being a subset of train, it never overlaps val or test.

        Args:
            fraction: share of the train videos to take, in (0, 1]; at least one video.

        Returns:
            The chosen videos, sorted by video id.
        """
        if not 0.0 < fraction <= 1.0:
            raise PbdError(f"calibration fraction {fraction} is not in (0, 1]; pass e.g. 0.1")
        train = self.split("train")
        count = max(1, round(fraction * len(train)))
        chosen = _pick_by_hash(train, count, salt="calibration")
        return [v for v in train if v.video_id in chosen]


def ground_truth(
    videos: Iterable[VideoInfo], label: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Ground truth in the evaluator's input format, each instance once.

    An annotation repeating an earlier one of the same video (same label, both ends within
    1 ms) is left out, as ActionFormer's and OpenTAD's evaluators do
    (`remove_duplicate_annotations`): a duplicate would count as a second instance that
    only a second, identical detection could match.

    Args:
        videos: the videos to include (e.g. `annotations.split("test")`).
        label: give every segment this label instead of its own (class-agnostic scoring:
            a class-agnostic model's one class, `DetectorConfig.truth_label`); a segment
            annotated twice under different labels is then one instance, as OpenTAD's
            `filter_same_annotation` keeps it for class-agnostic training.

    Returns:
        video_id -> list of {"label": str, "segment": [start_s, end_s]}.
    """
    truth = {}
    for v in videos:
        kept: list[tuple[str, float, float]] = []
        for a in v.annotations:
            name = a.label if label is None else label
            if not any(
                k[0] == name and abs(k[1] - a.start) <= 1e-3 and abs(k[2] - a.end) <= 1e-3
                for k in kept
            ):
                kept.append((name, a.start, a.end))
        truth[v.video_id] = [{"label": n, "segment": [s, e]} for n, s, e in kept]
    return truth


def load_annotations(
    path: str | Path, *, past_end: str = "error", subsets: str = "default"
) -> Annotations:
    """Load and validate an ActivityNet / THUMOS14 annotation file.

    Args:
        path: the JSON file.
        past_end: what to do with segments ending more than END_TOLERANCE_S after the
            video duration: 'error' (default: report them like any other problem),
            'keep' (log a warning; the official THUMOS14 ground truth has 30 such
            segments, which then count as misses) or 'drop' (log and remove them).
        subsets: which split role each subset feeds (`subset_roles`): a preset name
            ('default', 'opentad-thumos', 'opentad-anet') or SUBSET=ROLE pairs. A subset
            of the file that it does not map is a problem of the file.

    Returns:
        The validated Annotations.

    Raises:
        PbdError: missing or malformed file; lists every problem found in one line.
    """
    if past_end not in PAST_END_POLICIES:
        raise PbdError(f"unknown past_end policy '{past_end}' (use keep, drop or error)")
    roles = subset_roles(subsets)
    database = _read_database(Path(path))
    problems: list[str] = []
    late: list[tuple[str, int]] = []  # (video_id, annotation index) past the end
    unmapped: set[str] = set()
    videos = {}
    for video_id, entry in database.items():
        info = _parse_video(video_id, entry, problems, late, past_end, (subsets, roles), unmapped)
        if info is not None:
            videos[video_id] = info
    if problems:
        hint = " or pass --past-end keep|drop for segments past the end" if late else ""
        if unmapped:
            hint += f" or map {', '.join(sorted(unmapped))} with --subsets SUBSET=ROLE,..."
        raise PbdError(_problem_line(path, problems, hint))
    if late:
        videos = _handle_past_end(path, videos, late, past_end)
    videos = _drop_ignored(path, videos)
    return Annotations(videos, subsets)


def _read_database(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PbdError(f"annotation file not found: {path} (check the path)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise PbdError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} "
            "(fix the file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PbdError(f"cannot read annotation file {path}: {exc}") from None
    if not isinstance(data, dict) or "database" not in data:
        raise PbdError(
            f"{path}: missing top-level key 'database' "
            '(expected ActivityNet format {"database": {video_id: {...}}})'
        )
    database = data["database"]
    if not isinstance(database, dict) or not database:
        raise PbdError(f"{path}: 'database' must be a non-empty object of video_id -> video")
    return database


def _parse_video(
    video_id: str,
    entry: Any,
    problems: list[str],
    late: list[tuple[str, int]],
    past_end: str,
    mapping: tuple[str, dict[str, str]] = ("default", SUBSET_ROLES),
    unmapped: set[str] | None = None,
) -> VideoInfo | None:
    if not isinstance(entry, dict):
        problems.append(f"{video_id}: expected an object, got {_short(entry)}")
        return None
    missing = [k for k in ("subset", "duration", "annotations") if k not in entry]
    for key in missing:
        problems.append(f"{video_id}: missing key '{key}'")
    before = len(problems)
    subset = entry.get("subset")
    name, roles = mapping
    if "subset" in entry and (not isinstance(subset, str) or subset.lower() not in roles):
        if name == "default":
            expected = "training/validation/testing"
        else:
            expected = "/".join(roles) + f" under --subsets {name}"
        problems.append(f"{video_id}: unknown subset {_short(subset)} (expected {expected})")
        if isinstance(subset, str) and unmapped is not None:
            unmapped.add(repr(subset))
    duration = entry.get("duration")
    if "duration" in entry and not (_is_number(duration) and duration > 0):
        problems.append(f"{video_id}.duration: not a positive number ({_short(duration)})")
        duration = None
    fps = entry.get("fps")
    if fps is not None and not (_is_number(fps) and fps > 0):
        problems.append(f"{video_id}.fps: not a positive number ({_short(fps)})")
    raw = entry.get("annotations", [])
    if not isinstance(raw, list):
        problems.append(f"{video_id}.annotations: expected a list, got {_short(raw)}")
        raw = []
    annotations = []
    for i, item in enumerate(raw):
        where = f"{video_id}.annotations[{i}]"
        ann = _parse_annotation(where, item, duration, problems)
        if ann is None:
            continue
        if duration is not None and ann.end > duration + END_TOLERANCE_S:
            if past_end == "error":
                problems.append(f"{where}.segment: end {ann.end} > duration {duration}")
            late.append((video_id, i))
        annotations.append(ann)
    if missing or len(problems) > before:
        return None
    return VideoInfo(video_id, subset, float(duration), _opt_float(fps), tuple(annotations))


def _parse_annotation(
    where: str, item: Any, duration: float | None, problems: list[str]
) -> Annotation | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected an object, got {_short(item)}")
        return None
    ok = True
    label = item.get("label")
    if not isinstance(label, str) or not label:
        problems.append(f"{where}.label: missing or not a non-empty string ({_short(label)})")
        ok = False
    segment = item.get("segment")
    if not (isinstance(segment, (list, tuple)) and len(segment) == 2):
        problems.append(f"{where}.segment: expected [start, end], got {_short(segment)}")
        return None
    start, end = segment
    if not (_is_number(start) and _is_number(end)):
        problems.append(f"{where}.segment: non-numeric value in {_short(segment)}")
        return None
    if start < 0:
        problems.append(f"{where}.segment: start {start} < 0")
        ok = False
    if start >= end:
        problems.append(f"{where}.segment: start {start} >= end {end}")
        ok = False
    return Annotation(label, float(start), float(end)) if ok else None


# THUMOS14 marks unclear instances "Ambiguous" (its Ambiguous_*.txt lists): not an action
# class. OpenTAD's THUMOS datasets skip them (`if anno["label"] == "Ambiguous": continue`).
IGNORED_LABELS = ("Ambiguous",)


def _drop_ignored(path: str | Path, videos: dict[str, VideoInfo]) -> dict[str, VideoInfo]:
    dropped = sum(a.label in IGNORED_LABELS for v in videos.values() for a in v.annotations)
    if not dropped:
        return videos
    log.info("%s: %d 'Ambiguous' segments left out (not an action class)", path, dropped)
    return {
        vid: VideoInfo(v.video_id, v.subset, v.duration, v.fps,
                       tuple(a for a in v.annotations if a.label not in IGNORED_LABELS))
        for vid, v in videos.items()
    }  # fmt: skip


def _handle_past_end(
    path: str | Path, videos: dict[str, VideoInfo], late: list[tuple[str, int]], past_end: str
) -> dict[str, VideoInfo]:
    ids = sorted({vid for vid, _ in late})
    action = "dropped" if past_end == "drop" else "kept (they can never be detected)"
    log.warning(
        "%s: %d segments end more than %.1f s after their video's duration, %s; videos: %s",
        path,
        len(late),
        END_TOLERANCE_S,
        action,
        ", ".join(ids),
    )
    if past_end != "drop":
        return videos
    out = dict(videos)
    for vid in ids:
        v = videos[vid]
        kept = tuple(a for a in v.annotations if a.end <= v.duration + END_TOLERANCE_S)
        out[vid] = VideoInfo(v.video_id, v.subset, v.duration, v.fps, kept)
    return out


def _assign_roles(
    videos: Iterable[VideoInfo], subsets: str = "default"
) -> dict[str, list[VideoInfo]]:
    """Videos per split role, each sorted by video id, as `subsets` maps their subsets."""
    videos = sorted(videos, key=lambda v: v.video_id)
    roles = subset_roles(subsets)
    if subsets == "default" and not any(roles[v.subset.lower()] == "train" for v in videos):
        # THUMOS14 convention: train on validation videos; hold some out for val.
        roles = {name: "train+val" if r == "val" else r for name, r in roles.items()}
    splits: dict[str, list[VideoInfo]] = {role: [] for role in SUBSET_TARGETS}
    for v in videos:
        splits[roles[v.subset.lower()]].append(v)
    pool = splits.pop("train+val")
    if pool:
        count = min(len(pool) - 1, max(1, round(HELD_OUT_FRACTION * len(pool))))
        held = _pick_by_hash(pool, count, salt="held-out")
        splits["train"] = sorted(
            splits["train"] + [v for v in pool if v.video_id not in held],
            key=lambda v: v.video_id,
        )
        splits["val"] = [v for v in pool if v.video_id in held]  # no val subset beside it
    return {role: splits[role] for role in ROLES}


def _pick_by_hash(videos: list[VideoInfo], count: int, salt: str) -> set[str]:
    # A stable hash (not Python's salted hash(), not an RNG) makes the choice identical
    # across runs, machines and Python versions.
    def key(v: VideoInfo) -> str:
        return hashlib.sha256(f"{salt}:{v.video_id}".encode()).hexdigest()

    return {v.video_id for v in sorted(videos, key=key)[:count]}


def _problem_line(path: str | Path, problems: list[str], hint: str = "") -> str:
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    tail = f"; ... and {more} more" if more else ""
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{path}: {len(problems)} {noun}: " + "; ".join(listed) + tail + f" (fix the file{hint})"


def _is_number(value: Any) -> bool:
    # bool is an int subclass; `true` as a duration is a mistake, not 1 second.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
