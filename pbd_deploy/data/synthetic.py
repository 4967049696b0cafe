"""A synthetic temporal-action-detection benchmark written in the real on-disk format.

Every action is a coloured square or disk performing a class-specific motion pattern on a
drifting textured background, among distractor objects that wander at random. Timing follows
THUMOS14 statistics (or is copied from a real annotation file with `like`), so the output
exercises the same loaders, windows and metrics as a real data set, in seconds instead of hours.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pbd_deploy.atomic import prepare_output, write_atomically
from pbd_deploy.errors import PbdError

logger = logging.getLogger(__name__)

# Ordered so that any first-K subset mixes motion families (translation, rotation, scale,
# blinking, oscillation); `classes=K` uses the first K names.
PATTERNS = (
    "MoveRight", "OrbitClockwise", "GrowLarger", "BlinkFast", "OscillateHorizontal",
    "MoveLeft", "OrbitCounterClockwise", "ShrinkSmaller", "OscillateVertical", "MoveUp",
    "MoveDown", "MoveDiagonalDownRight", "MoveDiagonalUpLeft", "MoveDiagonalUpRight",
    "MoveDiagonalDownLeft",
)
_D = float(np.sqrt(0.5))
_LINEAR = {
    "MoveRight": (1.0, 0.0), "MoveLeft": (-1.0, 0.0), "MoveUp": (0.0, -1.0), "MoveDown": (0.0, 1.0),
    "MoveDiagonalDownRight": (_D, _D), "MoveDiagonalUpLeft": (-_D, -_D),
    "MoveDiagonalUpRight": (_D, -_D), "MoveDiagonalDownLeft": (-_D, _D),
}
SUBSETS = ("training", "validation", "testing")

# Computed once from tests/data/thumos14.json (412 videos, 6365 instances, all subsets): the
# 0%, 5%, ..., 100% quantiles (seconds) of instance length, and of the gap from one instance's
# end to the next instance's start (instances sorted by start; negative = overlap, ~9%).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)
THUMOS14_DURATION_QUANTILES = np.array([
    0.2, 0.8, 1.0, 1.2, 1.4, 1.6, 1.9, 2.1, 2.4, 2.7, 3.0,
    3.5, 4.0, 4.6, 5.3, 5.9, 6.5, 7.5, 8.5, 10.7, 118.1])
THUMOS14_GAP_QUANTILES = np.array([
    -19.5, -1.7, 0.0, 0.2, 0.4, 0.7, 0.9, 1.2, 1.6, 2.0, 2.5,
    3.2, 4.0, 4.98, 6.1, 7.8, 10.2, 13.2, 18.28, 29.84, 400.7])
# Object radius as a fraction of the frame: large enough to fill a good part of a 16x16
# patch of the tiny model's 32x32 input, so a ViT trained from scratch sees it.
OBJECT_RADIUS = (0.12, 0.2)
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
            _check(isinstance(value, int) and not isinstance(value, bool),
                   f"{name} must be an integer, got {value!r}")
        for name in ("fps", "min_duration", "max_duration", "noise", "contrast", "split_fractions"):
            value = getattr(self, name)
            try:
                value = tuple(map(float, value)) if name == "split_fractions" else float(value)
            except (TypeError, ValueError):
                raise PbdError(f"{name} must be numeric, got {value!r}") from None
            setattr(self, name, value)
        _check(bool(np.isfinite([self.fps, self.max_duration, self.noise]).all()),
               "fps, max_duration and noise must be finite")
        _check(self.videos >= 3, f"videos must be >= 3 (one per split), got {self.videos}")
        _check(1 <= self.classes <= len(PATTERNS),
               f"classes must be in 1..{len(PATTERNS)}, got {self.classes}")
        _check(self.fps > 0, f"fps must be > 0, got {self.fps}")
        _check(self.size >= 16 and self.size % 2 == 0,
               f"size must be an even number >= 16, got {self.size}")
        _check(0 < self.min_duration <= self.max_duration,
               f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        fractions = self.split_fractions
        _check(len(fractions) == 3 and min(fractions) > 0 and abs(sum(fractions) - 1) < 1e-3,
               f"split_fractions must be 3 positive numbers summing to 1, got {fractions}")
        _check(self.noise >= 0, f"noise must be >= 0, got {self.noise}")
        _check(self.distractors >= 0, f"distractors must be >= 0, got {self.distractors}")
        _check(0 < self.contrast <= 1, f"contrast must be in (0, 1], got {self.contrast}")

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict that `from_dict` accepts."""
        out = dataclasses.asdict(self)
        out["split_fractions"] = list(self.split_fractions)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SynthConfig:
        """Build a config from `to_dict` output, rejecting unknown keys."""
        _check(isinstance(data, dict), f"synthetic config must be a mapping, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown synthetic config keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Actor:
    """One action instance: an object that holds still, performs `pattern`, holds still, leaves.

    Coordinates are pixels (pixel centres at integers); times are seconds from the video start.
    `(x, y)` is the start position for translations and the centre for orbits/oscillations;
    `speed` is px/s for translations and radius growth px/s (signed) for Grow/Shrink;
    `amplitude` (px) and `freq` (Hz) shape orbits and oscillations, `freq` also blinking;
    `phase` is an orbit's start angle in radians.
    """

    pattern: str
    start: float
    end: float
    hold_before: float
    hold_after: float
    shape: str
    colour: tuple[float, float, float]
    radius: float
    x: float
    y: float
    speed: float = 0.0
    amplitude: float = 0.0
    freq: float = 0.0
    phase: float = 0.0


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video; rendering is a pure function of this and config."""

    video_id: str
    subset: str
    duration: float
    actors: tuple[Actor, ...]
    render_seed: int = 0
    source: str | None = None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PbdError(message)


def frame_count(duration: float, fps: float) -> int:
    """Number of frames a video of `duration` seconds has at `fps`."""
    return max(1, int(round(duration * fps)))


# ---------------------------------------------------------------- planning


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


def _colour(rng: np.random.Generator, contrast: float) -> tuple[float, float, float]:
    # Brighter than the grey background with a random tint: hue never identifies a class, and
    # objects differ from the background in a consistent direction (as foreground objects in
    # real footage do), so a detector trained from scratch for minutes can find them.
    tint = rng.normal(size=3)
    tint /= np.linalg.norm(tint) + 1e-9
    rgb = 128.0 + contrast * (rng.uniform(50, 80) + rng.uniform(20, 45) * tint)
    return tuple(float(c) for c in np.clip(rgb, 0, 255))


def _centre(rng, size, margin, travel=0.0):
    lo, hi = margin + max(0.0, -travel), size - 1 - margin - max(0.0, travel)
    return float(rng.uniform(lo, hi)) if lo <= hi else float(size - 1) / 2


def sample_actor(rng: np.random.Generator, pattern: str, start: float, end: float,
                 config: SynthConfig) -> Actor:
    """Draw the look and motion parameters of one instance of `pattern` over [start, end]."""
    s, length = config.size, max(end - start, 1e-3)
    radius = float(rng.uniform(*OBJECT_RADIUS) * s)
    kw = {}
    if pattern in _LINEAR:
        ux, uy = _LINEAR[pattern]
        span = (s - 1 - 2 * radius) / max(abs(ux), abs(uy))
        # Short instances still move visibly and long ones stay inside the frame.
        travel = float(np.clip(rng.uniform(0.08, 0.3) * s * length, 0.15 * s, span))
        kw = dict(speed=travel / length, x=_centre(rng, s, radius, ux * travel),
                  y=_centre(rng, s, radius, uy * travel))
    elif pattern.startswith(("Orbit", "Oscillate")):
        amplitude = float(rng.uniform(0.12, 0.2) * s)
        low = 0.3 / length if pattern.startswith("Orbit") else 0.5 / length
        freq = min(max(float(rng.uniform(0.4, 1.2)), low), config.fps / 5)
        kw = dict(amplitude=amplitude, freq=freq, phase=float(rng.uniform(0, 2 * np.pi)),
                  x=_centre(rng, s, radius + amplitude), y=_centre(rng, s, radius + amplitude))
    elif pattern in ("GrowLarger", "ShrinkSmaller"):
        small, large = rng.uniform(0.03, 0.06) * s, rng.uniform(0.15, 0.22) * s
        radius, target = (small, large) if pattern == "GrowLarger" else (large, small)
        kw = dict(speed=float((target - radius) / length), x=_centre(rng, s, large),
                  y=_centre(rng, s, large))
    elif pattern == "BlinkFast":
        kw = dict(freq=min(float(rng.uniform(1.5, 3.0)), config.fps / 3),
                  x=_centre(rng, s, radius), y=_centre(rng, s, radius))
    else:
        raise PbdError(f"unknown motion pattern {pattern!r}")
    hold = rng.uniform(0.2, 0.6, size=2)
    return Actor(pattern=pattern, start=start, end=end, hold_before=float(hold[0]),
                 hold_after=float(hold[1]), shape=str(rng.choice(["square", "disk"])),
                 colour=_colour(rng, config.contrast), radius=float(radius), **kw)


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
            segs = sorted((max(0.0, float(a["segment"][0])), min(duration, float(a["segment"][1])),
                           str(a["label"])) for a in database[vid].get("annotations", []))
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
        group = [(None, d, [(int(rng.integers(config.classes)), s, e)
                            for s, e in _timeline(rng, d, config.fps)]) for _, d, _ in group]
    raise PbdError(f"the {subset} split has too few action instances for {config.classes} "
                   f"classes; use more or longer videos or fewer classes")


def plan_videos(config: SynthConfig) -> list[VideoPlan]:
    """Decide every video's split, duration, instances and their look; no rendering.

    Raises:
        PbdError: If `like` is unreadable, or a split cannot hold one instance of every class.
    """
    rng = np.random.default_rng(config.seed)
    timings = list(_timings(config, rng))
    plans, first = [], 0
    for subset, count in zip(SUBSETS, _split_sizes(len(timings), config.split_fractions)):
        group, labels = _label_split(timings[first:first + count], subset, config, rng)
        labels = iter(labels)
        for source, duration, segs in group:
            actors = tuple(sample_actor(rng, PATTERNS[next(labels)], s, e, config)
                           for _, s, e in segs)
            plans.append(VideoPlan(f"synth_{len(plans):05d}", subset, duration, actors,
                                   int(rng.integers(2**31)), source))
        first += count
    return plans


# ---------------------------------------------------------------- rendering


def trajectory(actor: Actor, t: np.ndarray):
    """Return (x, y, radius, visible) arrays of `actor` at times `t` (seconds)."""
    tau = np.clip(t - actor.start, 0.0, actor.end - actor.start)
    moving = (t >= actor.start) & (t <= actor.end)
    x, y = np.full(t.shape, actor.x), np.full(t.shape, actor.y)
    r, on = np.full(t.shape, actor.radius), np.ones(t.shape, bool)
    p = actor.pattern
    if p in _LINEAR:
        x, y = x + _LINEAR[p][0] * actor.speed * tau, y + _LINEAR[p][1] * actor.speed * tau
    elif p.startswith("Orbit"):
        # Image y points down, so a growing angle turns clockwise on screen.
        angle = actor.phase + (1 if p == "OrbitClockwise" else -1) * 2 * np.pi * actor.freq * tau
        x, y = x + actor.amplitude * np.cos(angle), y + actor.amplitude * np.sin(angle)
    elif p.startswith("Oscillate"):
        offset = actor.amplitude * np.sin(2 * np.pi * actor.freq * tau)
        x, y = (x + offset, y) if p == "OscillateHorizontal" else (x, y + offset)
    elif p in ("GrowLarger", "ShrinkSmaller"):
        r = r + actor.speed * tau
    elif p == "BlinkFast":
        on = ~moving | ((actor.freq * tau) % 1.0 < 0.5)
    visible = (t >= actor.start - actor.hold_before) & (t <= actor.end + actor.hold_after)
    return x, y, r, on & visible


def _draw(frames, shape, colour, x, y, r, on) -> None:
    # Anti-aliased coverage keeps sub-pixel motion visible at low resolution.
    grid = np.arange(frames.shape[1], dtype=np.float32)
    dx = np.abs(grid[None, None, :] - x.astype(np.float32)[:, None, None])
    dy = np.abs(grid[None, :, None] - y.astype(np.float32)[:, None, None])
    dist = np.sqrt(dx * dx + dy * dy) if shape == "disk" else np.maximum(dx, dy)
    alpha = (r.astype(np.float32) + np.float32(0.5))[:, None, None] - dist
    alpha = np.clip(alpha, 0.0, 1.0, out=alpha) * on[:, None, None]
    frames += alpha[..., None] * (np.float32(colour) - frames)


def _background(rng, size, fps, n):
    spectrum = np.fft.fft2(rng.normal(size=(size, size)))
    f = np.fft.fftfreq(size)
    # A Gaussian low-pass of periodic noise tiles seamlessly, so drifting it by wrapping is clean.
    texture = np.real(np.fft.ifft2(spectrum * np.exp(-(f[:, None] ** 2 + f[None] ** 2) * 400)))
    texture = (texture - texture.mean()) / (texture.std() + 1e-9) * rng.uniform(8, 14)
    base = 128 + rng.uniform(-10, 10, size=3)
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0)  # px/s
    drift = np.outer(np.arange(n) / fps, [np.sin(angle), np.cos(angle)]) * speed
    return texture.astype(np.float32), base.astype(np.float32), drift


def _shifted(texture, drift):
    # Bilinear sampling of the wrapped texture at a sub-pixel offset per frame.
    size = texture.shape[0]
    whole, frac = np.floor(drift).astype(int), (drift - np.floor(drift)).astype(np.float32)
    grid = np.arange(size)
    out = 0
    for oy, ox in ((0, 0), (0, 1), (1, 0), (1, 1)):
        ys = (grid[None, :] + whole[:, :1] + oy) % size
        xs = (grid[None, :] + whole[:, 1:] + ox) % size
        wy = frac[:, 0] if oy else 1 - frac[:, 0]
        wx = frac[:, 1] if ox else 1 - frac[:, 1]
        out = out + (wy * wx)[:, None, None] * texture[ys[:, :, None], xs[:, None, :]]
    return out


def _distractor_paths(rng, config, n):
    s, paths = config.size, []
    for _ in range(config.distractors):
        radius = float(rng.uniform(*OBJECT_RADIUS) * s)
        width = int(2 * config.fps) + 1
        steps = rng.normal(size=(n + width - 1, 2))
        # Smoothed white noise gives a wandering velocity with no consistent direction.
        vel = np.stack([np.convolve(steps[:, k], np.hanning(width + 2)[1:-1], "valid")
                        for k in range(2)], axis=1)
        vel *= rng.uniform(0.05, 0.2) * s / config.fps / (vel.std() + 1e-9)
        free = rng.uniform(0, s - 1 - 2 * radius, size=2) + np.cumsum(vel, axis=0)
        # Reflect the free path into the frame (a triangle wave), keeping it continuous.
        span = s - 1 - 2 * radius
        pos = radius + span - np.abs(free % (2 * span) - span)
        paths.append((str(rng.choice(["square", "disk"])), _colour(rng, config.contrast),
                       pos[:, 0], pos[:, 1], np.full(n, radius), np.ones(n, bool)))
    return paths


def iter_frames(plan: VideoPlan, config: SynthConfig, chunk: int = 256) -> Iterator[np.ndarray]:
    """Render `plan` chunk by chunk as uint8 arrays of shape (frames, size, size, 3)."""
    rng = np.random.default_rng(plan.render_seed)
    n = frame_count(plan.duration, config.fps)
    texture, base, drift = _background(rng, config.size, config.fps, n)
    distractors = _distractor_paths(rng, config, n)
    for first in range(0, n, chunk):
        idx = np.arange(first, min(first + chunk, n))
        frames = _shifted(texture, drift[idx])[..., None] + base
        for shape, colour, x, y, r, on in distractors:
            _draw(frames, shape, colour, x[idx], y[idx], r[idx], on[idx])
        t = idx / config.fps
        for actor in plan.actors:
            if actor.start - actor.hold_before > t[-1] or actor.end + actor.hold_after < t[0]:
                continue
            x, y, r, on = trajectory(actor, t)
            shown = np.flatnonzero(on)
            if shown.size:
                # Slicing (not masking) keeps `frames` a view that _draw writes into.
                sl = slice(shown[0], shown[-1] + 1)
                _draw(frames[sl], actor.shape, actor.colour, x[sl], y[sl], r[sl], on[sl])
        if config.noise > 0:
            # Luma-only noise: a third of the cost, and yuv420p would average chroma noise away.
            noise = rng.standard_normal(frames.shape[:3], dtype=np.float32)
            frames += (noise * np.float32(config.noise))[..., None]
        yield np.clip(frames + 0.5, 0, 255).astype(np.uint8)


def render_video(plan: VideoPlan, config: SynthConfig) -> np.ndarray:
    """Render all frames of `plan` at once: uint8 (frames, size, size, 3), RGB."""
    return np.concatenate(list(iter_frames(plan, config)), axis=0)


# ---------------------------------------------------------------- writing


def _codec(available) -> str:
    return "libx264" if "libx264" in available else "mpeg4"


def _encode(path: Path, frames: Iterator[np.ndarray], config: SynthConfig) -> None:
    import av  # PyAV is only needed when videos are actually written

    rate = Fraction(config.fps).limit_denominator(1001)
    codec = _codec(av.codecs_available)
    # One x264 thread is faster on 64x64 frames and makes the output bytes reproducible.
    options = {"crf": "18", "preset": "ultrafast", "threads": "1"} if codec == "libx264" else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        if codec == "mpeg4":
            stream.bit_rate = int(40 * config.size * config.size * rate)
        stream.width = stream.height = config.size
        stream.pix_fmt = "yuv420p"
        index = 0
        for chunk in frames:
            for image in chunk:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, 1 / rate
                container.mux(stream.encode(frame))
                index += 1
        container.mux(stream.encode())


def annotations(plans: list[VideoPlan], config: SynthConfig) -> dict:
    """The ActivityNet-format annotation dict for `plans`, with the config that made them."""
    database = {}
    for plan in plans:
        entry = {"subset": plan.subset, "duration": plan.duration, "fps": config.fps,
                 "annotations": [{"label": a.pattern, "segment": [a.start, a.end]}
                                 for a in plan.actors]}
        if plan.source is not None:
            entry["source"] = plan.source
        database[plan.video_id] = entry
    return {"version": "synthetic-1", "database": database, "synthetic": config.to_dict()}


def make_synthetic(out_dir: str | Path, config: SynthConfig, force: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> Path:
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
            _encode(tmp / "videos" / f"{plan.video_id}.mp4", iter_frames(plan, config), config)
            logger.debug("wrote %s (%.1f s, %d actions)", plan.video_id, plan.duration,
                         len(plan.actors))
            if progress is not None:
                progress(done, len(plans))
        text = json.dumps(annotations(plans, config), indent=1)
        (tmp / "annotations.json").write_text(text + "\n")

    out = write_atomically(out_dir, write, force, marker="annotations.json")
    logger.info("wrote %d synthetic videos to %s", len(plans), out)
    return out
