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

# Accepted subset names (case-insensitive) and the split role each one feeds.
SUBSET_ROLES = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "testing": "test",
    "test": "test",
}
ROLES = ("train", "val", "test")

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
        """The split role ('train', 'val' or 'test') named by this video's subset."""
        return SUBSET_ROLES[self.subset.lower()]


class Annotations:
    """A validated annotation database with deterministic train/val/test splits."""

    def __init__(self, videos: dict[str, VideoInfo]):
        self.videos = videos
        self.class_names = sorted({a.label for v in videos.values() for a in v.annotations})
        self._splits = _assign_roles(videos.values())

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
            role: 'train', 'val' or 'test' (or training/validation/testing).

        Returns:
            The videos in that role. Without a training subset (THUMOS14), train is the
            validation subset minus a hash-chosen ~15% held out as val.

        Raises:
            PbdError: unknown role, or no videos in that role.
        """
        key = SUBSET_ROLES.get(role.lower())
        if key is None:
            raise PbdError(f"unknown split '{role}' (use train, val or test)")
        videos = self._splits[key]
        if not videos:
            present = ", ".join(sorted({v.subset for v in self.videos.values()})) or "none"
            raise PbdError(
                f"no videos in split '{role}' (subsets present: {present}); "
                "pick another split or add videos with that subset"
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


def ground_truth(videos: Iterable[VideoInfo]) -> dict[str, list[dict[str, Any]]]:
    """Ground truth in the evaluator's input format.

    Args:
        videos: the videos to include (e.g. `annotations.split("test")`).

    Returns:
        video_id -> list of {"label": str, "segment": [start_s, end_s]}.
    """
    return {
        v.video_id: [{"label": a.label, "segment": [a.start, a.end]} for a in v.annotations]
        for v in videos
    }


def load_annotations(path: str | Path, *, past_end: str = "error") -> Annotations:
    """Load and validate an ActivityNet / THUMOS14 annotation file.

    Args:
        path: the JSON file.
        past_end: what to do with segments ending more than END_TOLERANCE_S after the
            video duration: 'error' (default: report them like any other problem),
            'keep' (log a warning; the official THUMOS14 ground truth has 30 such
            segments, which then count as misses) or 'drop' (log and remove them).

    Returns:
        The validated Annotations.

    Raises:
        PbdError: missing or malformed file; lists every problem found in one line.
    """
    if past_end not in PAST_END_POLICIES:
        raise PbdError(f"unknown past_end policy '{past_end}' (use keep, drop or error)")
    database = _read_database(Path(path))
    problems: list[str] = []
    late: list[tuple[str, int]] = []  # (video_id, annotation index) past the end
    videos = {}
    for video_id, entry in database.items():
        info = _parse_video(video_id, entry, problems, late, past_end)
        if info is not None:
            videos[video_id] = info
    if problems:
        hint = " or pass --past-end keep|drop for segments past the end" if late else ""
        raise PbdError(_problem_line(path, problems, hint))
    if late:
        videos = _handle_past_end(path, videos, late, past_end)
    return Annotations(videos)


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
    video_id: str, entry: Any, problems: list[str], late: list[tuple[str, int]], past_end: str
) -> VideoInfo | None:
    if not isinstance(entry, dict):
        problems.append(f"{video_id}: expected an object, got {_short(entry)}")
        return None
    missing = [k for k in ("subset", "duration", "annotations") if k not in entry]
    for key in missing:
        problems.append(f"{video_id}: missing key '{key}'")
    before = len(problems)
    subset = entry.get("subset")
    if "subset" in entry and (not isinstance(subset, str) or subset.lower() not in SUBSET_ROLES):
        problems.append(
            f"{video_id}: unknown subset {_short(subset)} (expected training/validation/testing)"
        )
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


def _assign_roles(videos: Iterable[VideoInfo]) -> dict[str, list[VideoInfo]]:
    splits: dict[str, list[VideoInfo]] = {role: [] for role in ROLES}
    for v in sorted(videos, key=lambda v: v.video_id):
        splits[v.role].append(v)
    if not splits["train"] and splits["val"]:
        # THUMOS14 convention: train on validation videos; hold some out for val.
        pool = splits["val"]
        count = min(len(pool) - 1, max(1, round(HELD_OUT_FRACTION * len(pool))))
        held = _pick_by_hash(pool, count, salt="held-out")
        splits["train"] = [v for v in pool if v.video_id not in held]
        splits["val"] = [v for v in pool if v.video_id in held]
    return splits


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
