"""A synthetic temporal-action-detection benchmark written in the real on-disk format.

Every action is a coloured square or disk performing a class-specific motion pattern on a
drifting textured background, among distractor objects that wander at random. Timing follows
THUMOS14 statistics (or is copied from a real annotation file with `like`), so the output
exercises the same loaders, windows and metrics as a real data set, in seconds instead of hours.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pbd_deploy.core import config as config_io
from pbd_deploy.core.atomic import prepare_output, write_atomically
from pbd_deploy.core.video import write_video
from pbd_deploy.data.render import (
    LINEAR_DIRECTIONS,
    OBJECT_RADIUS,
    Actor,
    VideoPlan,
    frame_count,
    iter_frames,
    object_colour,
)
from pbd_deploy.errors import PbdError

logger = logging.getLogger(__name__)

# Ordered so that any first-K subset mixes motion families (translation, rotation, scale,
# blinking, oscillation); `classes=K` uses the first K names.
PATTERNS = (
    "MoveRight",
    "OrbitClockwise",
    "GrowLarger",
    "BlinkFast",
    "OscillateHorizontal",
    "MoveLeft",
    "OrbitCounterClockwise",
    "ShrinkSmaller",
    "OscillateVertical",
    "MoveUp",
    "MoveDown",
    "MoveDiagonalDownRight",
    "MoveDiagonalUpLeft",
    "MoveDiagonalUpRight",
    "MoveDiagonalDownLeft",
)
SUBSETS = ("training", "validation", "testing")

# Computed once from tests/fixtures/thumos14.json (412 videos, 6365 instances, all subsets): the
# 0%, 5%, ..., 100% quantiles (seconds) of instance length, and of the gap from one instance's
# end to the next instance's start (instances sorted by start; negative = overlap, ~9%).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)
THUMOS14_DURATION_QUANTILES = np.array(
    [
        0.2,
        0.8,
        1.0,
        1.2,
        1.4,
        1.6,
        1.9,
        2.1,
        2.4,
        2.7,
        3.0,
        3.5,
        4.0,
        4.6,
        5.3,
        5.9,
        6.5,
        7.5,
        8.5,
        10.7,
        118.1,
    ]
)
THUMOS14_GAP_QUANTILES = np.array(
    [
        -19.5,
        -1.7,
        0.0,
        0.2,
        0.4,
        0.7,
        0.9,
        1.2,
        1.6,
        2.0,
        2.5,
        3.2,
        4.0,
        4.98,
        6.1,
        7.8,
        10.2,
        13.2,
        18.28,
        29.84,
        400.7,
    ]
)
MAX_INSTANCE_S = 12.0  # fits one 12.8 s model window
MIN_INSTANCE_S = 0.2  # the shortest THUMOS14 instance
_SPLIT_TRIES = 50


@dataclass
class SynthConfig:
    """How to build a synthetic benchmark.

    Attributes:
        videos: Number of videos (a cap on the videos copied when `like` is set).
        classes: Number of action classes, the first `classes` names of `PATTERNS`.
        seed: Seed of every random choice; the same seed gives the same annotations.
        fps: Frame rate of the videos.
        size: Width and height in pixels (even, for yuv420p).
        min_duration: Shortest video in seconds.
        max_duration: Longest video in seconds.
        like: Path of an ActivityNet/THUMOS JSON whose durations and segments to copy.
        split_fractions: Shares of training, validation and testing videos.
        noise: Std of per-pixel Gaussian noise, 0..255 units.
        distractors: Objects in every video that wander at random all the time.
        contrast: Foreground/background contrast; below 1 is harder.
    """

    videos: int = 160
    classes: int = 4
    seed: int = 0
    fps: float = 10.0
    size: int = 64
    min_duration: float = 30.0
    max_duration: float = 60.0
    like: str | None = None
    split_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)
    noise: float = 4.0
    distractors: int = 1
    contrast: float = 1.0

    def __post_init__(self):
        if self.like is not None:
            self.like = str(self.like)
        for name in ("videos", "classes", "seed", "size", "distractors"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and not isinstance(value, bool),
                f"{name} must be an integer, got {value!r}",
            )
        for name in ("fps", "min_duration", "max_duration", "noise", "contrast", "split_fractions"):
            value = getattr(self, name)
            try:
                value = tuple(map(float, value)) if name == "split_fractions" else float(value)
            except (TypeError, ValueError):
                raise PbdError(f"{name} must be numeric, got {value!r}") from None
            setattr(self, name, value)
        _check(
            bool(np.isfinite([self.fps, self.max_duration, self.noise]).all()),
            "fps, max_duration and noise must be finite",
        )
        _check(self.videos >= 3, f"videos must be >= 3 (one per split), got {self.videos}")
        _check(
            1 <= self.classes <= len(PATTERNS),
            f"classes must be in 1..{len(PATTERNS)}, got {self.classes}",
        )
        _check(self.fps > 0, f"fps must be > 0, got {self.fps}")
        _check(
            self.size >= 16 and self.size % 2 == 0,
            f"size must be an even number >= 16, got {self.size}",
        )
        _check(
            0 < self.min_duration <= self.max_duration,
            f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}",
        )
        fractions = self.split_fractions
        _check(
            len(fractions) == 3 and min(fractions) > 0 and abs(sum(fractions) - 1) < 1e-3,
            f"split_fractions must be 3 positive numbers summing to 1, got {fractions}",
        )
        _check(self.noise >= 0, f"noise must be >= 0, got {self.noise}")
        _check(self.distractors >= 0, f"distractors must be >= 0, got {self.distractors}")
        _check(0 < self.contrast <= 1, f"contrast must be in (0, 1], got {self.contrast}")

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict that `from_dict` accepts."""
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> SynthConfig:
        """Build a config from `to_dict` output, rejecting unknown keys."""
        return config_io.from_dict(cls, data, where)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PbdError(message)


def _sample(rng: np.random.Generator, table: np.ndarray) -> float:
    # Inverse CDF with linear interpolation between the embedded quantiles.
    return float(np.interp(rng.random(), QUANTILE_LEVELS, table))


def _timeline(rng: np.random.Generator, duration: float, fps: float) -> list[tuple[float, float]]:
    shortest = max(MIN_INSTANCE_S, 2.0 / fps)
    length = min(max(_sample(rng, THUMOS14_DURATION_QUANTILES), shortest), MAX_INSTANCE_S, duration)
    # The first gap is clipped so that every video has at least one instance.
    t = min(max(_sample(rng, THUMOS14_GAP_QUANTILES), 0.0), duration - length)
    segments = []
    while not segments or t + length <= duration:
        segments.append((round(t, 2), round(min(t + length, duration), 2)))
        # A negative gap overlaps the previous instance, as in THUMOS14, but starts stay ordered.
        t = max(t + length + _sample(rng, THUMOS14_GAP_QUANTILES), t + shortest)
        length = min(max(_sample(rng, THUMOS14_DURATION_QUANTILES), shortest), MAX_INSTANCE_S)
    return [(s, e) for s, e in segments if e > s]


def _centre(rng, size, margin, travel=0.0):
    lo, hi = margin + max(0.0, -travel), size - 1 - margin - max(0.0, travel)
    return float(rng.uniform(lo, hi)) if lo <= hi else float(size - 1) / 2


def sample_actor(
    rng: np.random.Generator, pattern: str, start: float, end: float, config: SynthConfig
) -> Actor:
    """Draw the look and motion parameters of one instance of `pattern` over [start, end]."""
    s, length = config.size, max(end - start, 1e-3)
    radius = float(rng.uniform(*OBJECT_RADIUS) * s)
    kw = {}
    if pattern in LINEAR_DIRECTIONS:
        ux, uy = LINEAR_DIRECTIONS[pattern]
        span = (s - 1 - 2 * radius) / max(abs(ux), abs(uy))
        # Short instances still move visibly and long ones stay inside the frame.
        travel = float(np.clip(rng.uniform(0.08, 0.3) * s * length, 0.15 * s, span))
        kw = dict(
            speed=travel / length,
            x=_centre(rng, s, radius, ux * travel),
            y=_centre(rng, s, radius, uy * travel),
        )
    elif pattern.startswith(("Orbit", "Oscillate")):
        amplitude = float(rng.uniform(0.12, 0.2) * s)
        low = 0.3 / length if pattern.startswith("Orbit") else 0.5 / length
        freq = min(max(float(rng.uniform(0.4, 1.2)), low), config.fps / 5)
        kw = dict(
            amplitude=amplitude,
            freq=freq,
            phase=float(rng.uniform(0, 2 * np.pi)),
            x=_centre(rng, s, radius + amplitude),
            y=_centre(rng, s, radius + amplitude),
        )
    elif pattern in ("GrowLarger", "ShrinkSmaller"):
        small, large = rng.uniform(0.03, 0.06) * s, rng.uniform(0.15, 0.22) * s
        radius, target = (small, large) if pattern == "GrowLarger" else (large, small)
        kw = dict(
            speed=float((target - radius) / length),
            x=_centre(rng, s, large),
            y=_centre(rng, s, large),
        )
    elif pattern == "BlinkFast":
        kw = dict(
            freq=min(float(rng.uniform(1.5, 3.0)), config.fps / 3),
            x=_centre(rng, s, radius),
            y=_centre(rng, s, radius),
        )
    else:
        raise PbdError(f"unknown motion pattern {pattern!r}")
    hold = rng.uniform(0.2, 0.6, size=2)
    return Actor(
        pattern=pattern,
        start=start,
        end=end,
        hold_before=float(hold[0]),
        hold_after=float(hold[1]),
        shape=str(rng.choice(["square", "disk"])),
        colour=object_colour(rng, config.contrast),
        radius=float(radius),
        **kw,
    )


def _split_sizes(n: int, fractions) -> list[int]:
    # Largest remainder, then make sure every split gets at least one video.
    raw = np.array(fractions) * n
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    while sizes.min() == 0:
        sizes[sizes.argmax()] -= 1
        sizes[sizes.argmin()] += 1
    return sizes.tolist()


def _cover(labels: list[int], classes: int, rng: np.random.Generator) -> bool:
    """Relabel instances in place so every class occurs; False if there are too few."""
    if len(labels) < classes:
        return False
    for missing in [c for c in range(classes) if c not in labels]:
        counts = np.bincount(labels, minlength=classes)
        donors = [i for i, c in enumerate(labels) if counts[c] == counts.max()]
        labels[donors[int(rng.integers(len(donors)))]] = missing
    return True


def _read_like(path: str) -> list[tuple[str, float, list[tuple[str, float, float]]]]:
    videos = []
    try:
        database = json.loads(Path(path).read_text())["database"]
        for vid in sorted(database):
            duration = float(database[vid]["duration"])
            # Real files (THUMOS14 too) have segments past the stated duration: clip or drop them.
            segs = sorted(
                (
                    max(0.0, float(a["segment"][0])),
                    min(duration, float(a["segment"][1])),
                    str(a["label"]),
                )
                for a in database[vid].get("annotations", [])
            )
            segs = [(lab, s, e) for s, e, lab in segs if e - s > 1e-6]
            if segs:
                videos.append((vid, duration, segs))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise PbdError(f"cannot read ActivityNet-style annotations from {path}: {exc!r}")
    return videos


def _timings(config: SynthConfig, rng: np.random.Generator):
    """Yield (source id, duration, [(class, start, end)]) per video, before split assignment."""
    if config.like is None:
        for _ in range(config.videos):
            frames = frame_count(rng.uniform(config.min_duration, config.max_duration), config.fps)
            duration = round(frames / config.fps, 3)
            segs = _timeline(rng, duration, config.fps)
            yield None, duration, [(int(rng.integers(config.classes)), s, e) for s, e in segs]
        return
    videos = _read_like(config.like)
    _check(len(videos) >= 3, f"{config.like} has fewer than 3 annotated videos")
    names = sorted({lab for _, _, segs in videos for lab, _, _ in segs})
    class_of = {name: i % config.classes for i, name in enumerate(names)}
    if len(videos) > config.videos:
        keep = sorted(rng.choice(len(videos), size=config.videos, replace=False))
        videos = [videos[i] for i in keep]
    for vid, duration, segs in (videos[i] for i in rng.permutation(len(videos))):
        yield vid, duration, [(class_of[lab], s, e) for lab, s, e in segs]


def _label_split(group: list, subset: str, config: SynthConfig, rng: np.random.Generator):
    """Return the split's timings and one class per instance, with every class present."""
    for _ in range(_SPLIT_TRIES if config.like is None else 1):
        labels = [c for _, _, segs in group for c, _, _ in segs]
        if _cover(labels, config.classes, rng):
            return group, labels
        # Too few instances in this split: draw its generated timelines again.
        group = [
            (
                None,
                d,
                [
                    (int(rng.integers(config.classes)), s, e)
                    for s, e in _timeline(rng, d, config.fps)
                ],
            )
            for _, d, _ in group
        ]
    raise PbdError(
        f"the {subset} split has too few action instances for {config.classes} "
        f"classes; use more or longer videos or fewer classes"
    )


def plan_videos(config: SynthConfig) -> list[VideoPlan]:
    """Decide every video's split, duration, instances and their look; no rendering.

    Raises:
        PbdError: If `like` is unreadable, or a split cannot hold one instance of every class.
    """
    rng = np.random.default_rng(config.seed)
    timings = list(_timings(config, rng))
    plans, first = [], 0
    for subset, count in zip(SUBSETS, _split_sizes(len(timings), config.split_fractions)):
        group, labels = _label_split(timings[first : first + count], subset, config, rng)
        labels = iter(labels)
        for source, duration, segs in group:
            actors = tuple(
                sample_actor(rng, PATTERNS[next(labels)], s, e, config) for _, s, e in segs
            )
            plans.append(
                VideoPlan(
                    f"synth_{len(plans):05d}",
                    subset,
                    duration,
                    actors,
                    int(rng.integers(2**31)),
                    source,
                )
            )
        first += count
    return plans


# ---------------------------------------------------------------- writing


def _frames(plan: VideoPlan, config: SynthConfig) -> Iterator[np.ndarray]:
    """The frames of `plan`, one (size, size, 3) uint8 array at a time (rendered in chunks)."""
    for chunk in iter_frames(plan, config):
        yield from chunk


def annotations(plans: list[VideoPlan], config: SynthConfig) -> dict:
    """The ActivityNet-format annotation dict for `plans`, with the config that made them."""
    database = {}
    for plan in plans:
        entry = {
            "subset": plan.subset,
            "duration": plan.duration,
            "fps": config.fps,
            "annotations": [{"label": a.pattern, "segment": [a.start, a.end]} for a in plan.actors],
        }
        if plan.source is not None:
            entry["source"] = plan.source
        database[plan.video_id] = entry
    return {"version": "synthetic-1", "database": database, "synthetic": config.to_dict()}


def make_synthetic(
    out_dir: str | Path,
    config: SynthConfig,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic benchmark: `annotations.json` plus `videos/<video_id>.mp4`.

    The data set is built in a sibling temporary directory and renamed into place only when
    complete, so an interrupted run never leaves a half-written `out_dir`.

    Args:
        out_dir: Directory to create.
        config: What to generate.
        force: Replace an existing `out_dir` (only one made by this function, or an empty one).
        progress: Called as `progress(videos_done, videos_total)` after each video.

    Returns:
        The path of the finished data set.

    Raises:
        PbdError: If `out_dir` exists without `force`, or the config cannot be satisfied.
    """
    prepare_output(out_dir, force, marker="annotations.json")
    plans = plan_videos(config)

    def write(tmp: Path) -> None:
        (tmp / "videos").mkdir()
        for done, plan in enumerate(plans, 1):
            write_video(tmp / "videos" / f"{plan.video_id}.mp4", _frames(plan, config), config.fps)
            logger.debug(
                "wrote %s (%.1f s, %d actions)", plan.video_id, plan.duration, len(plan.actors)
            )
            if progress is not None:
                progress(done, len(plans))
        text = json.dumps(annotations(plans, config), indent=1)
        (tmp / "annotations.json").write_text(text + "\n")

    out = write_atomically(out_dir, write, force, marker="annotations.json")
    logger.info("wrote %d synthetic videos to %s", len(plans), out)
    return out
