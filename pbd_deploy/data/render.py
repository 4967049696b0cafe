"""Rendering of the synthetic benchmark: moving objects on a drifting, noisy background.

Pure functions of a `VideoPlan` and the config, so what a class looks like can be tested
without any video I/O (see tests/data/test_synthetic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

_D = float(np.sqrt(0.5))
LINEAR_DIRECTIONS = {
    "MoveRight": (1.0, 0.0),
    "MoveLeft": (-1.0, 0.0),
    "MoveUp": (0.0, -1.0),
    "MoveDown": (0.0, 1.0),
    "MoveDiagonalDownRight": (_D, _D),
    "MoveDiagonalUpLeft": (-_D, -_D),
    "MoveDiagonalUpRight": (_D, -_D),
    "MoveDiagonalDownLeft": (-_D, _D),
}

# Object radius as a fraction of the frame: large enough to fill a good part of a 16x16
# patch of the tiny model's 32x32 input, so a ViT trained from scratch sees it.
OBJECT_RADIUS = (0.12, 0.2)


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


def frame_count(duration: float, fps: float) -> int:
    """Number of frames a video of `duration` seconds has at `fps`."""
    return max(1, int(round(duration * fps)))


# ---------------------------------------------------------------- planning


def object_colour(rng: np.random.Generator, contrast: float) -> tuple[float, float, float]:
    # Brighter than the grey background with a random tint: hue never identifies a class, and
    # objects differ from the background in a consistent direction (as foreground objects in
    # real footage do), so a detector trained from scratch for minutes can find them.
    tint = rng.normal(size=3)
    tint /= np.linalg.norm(tint) + 1e-9
    rgb = 128.0 + contrast * (rng.uniform(50, 80) + rng.uniform(20, 45) * tint)
    return tuple(float(c) for c in np.clip(rgb, 0, 255))


def trajectory(actor: Actor, t: np.ndarray):
    """Return (x, y, radius, visible) arrays of `actor` at times `t` (seconds)."""
    tau = np.clip(t - actor.start, 0.0, actor.end - actor.start)
    moving = (t >= actor.start) & (t <= actor.end)
    x, y = np.full(t.shape, actor.x), np.full(t.shape, actor.y)
    r, on = np.full(t.shape, actor.radius), np.ones(t.shape, bool)
    p = actor.pattern
    if p in LINEAR_DIRECTIONS:
        x, y = (
            x + LINEAR_DIRECTIONS[p][0] * actor.speed * tau,
            y + LINEAR_DIRECTIONS[p][1] * actor.speed * tau,
        )
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
        vel = np.stack(
            [np.convolve(steps[:, k], np.hanning(width + 2)[1:-1], "valid") for k in range(2)],
            axis=1,
        )
        vel *= rng.uniform(0.05, 0.2) * s / config.fps / (vel.std() + 1e-9)
        free = rng.uniform(0, s - 1 - 2 * radius, size=2) + np.cumsum(vel, axis=0)
        # Reflect the free path into the frame (a triangle wave), keeping it continuous.
        span = s - 1 - 2 * radius
        pos = radius + span - np.abs(free % (2 * span) - span)
        paths.append(
            (
                str(rng.choice(["square", "disk"])),
                object_colour(rng, config.contrast),
                pos[:, 0],
                pos[:, 1],
                np.full(n, radius),
                np.ones(n, bool),
            )
        )
    return paths


def iter_frames(plan: VideoPlan, config, chunk: int = 256) -> Iterator[np.ndarray]:
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


def render_video(plan: VideoPlan, config) -> np.ndarray:
    """Render all frames of `plan` at once: uint8 (frames, size, size, 3), RGB."""
    return np.concatenate(list(iter_frames(plan, config)), axis=0)
