"""Jetson power and clocks: parse tegrastats lines, sample them during a run, integrate energy.

tegrastats prints one line per interval. Its format changed across boards and JetPack
releases: rails are `NAME cur/avg` in mW without a unit on TX2 / Xavier (JetPack 4), with
`mW` on Orin (JetPack 5, 6), and `cur/avg/max` on JetPack 7; the GPU clock is `@F` or
`@[F,F]` (one per GPC). The parser reads every rail generically so new rail names work.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# Rails that measure the whole module's input, by board family: Orin Nano/NX and
# Xavier NX (VDD_IN), Nano (POM_5V_IN), Thor (VIN). Without one, the rails are summed
# (AGX Orin: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0; AGX Xavier: GPU + CPU + SOC + ...).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")

_TIME = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_ENGINE = re.compile(r"\b(GR3D|EMC)_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b")
# NAME cur[mW]/avg[mW][/max[mW]]; the lookahead stops "RAM 1313/30697MB" from matching.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_RAIL_NOW = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW(?=\s|$)")  # current value only


@dataclass
class TegraSample:
    """One tegrastats line. Power in mW, clocks in MHz, loads in %."""

    rails: dict[str, float] = field(default_factory=dict)  # current mW
    rails_avg: dict[str, float] = field(default_factory=dict)
    gpu_load: float | None = None
    gpu_mhz: list[int] = field(default_factory=list)  # one per GPC when tegrastats lists them
    emc_load: float | None = None
    emc_mhz: int | None = None
    cpu_load: list[float | None] = field(default_factory=list)  # None: core off
    cpu_mhz: list[int | None] = field(default_factory=list)
    temps: dict[str, float] = field(default_factory=dict)
    ram_mb: tuple[int, int] | None = None
    stamp: str | None = None

    @property
    def power_mw(self) -> float | None:
        """Module input power: an input rail if the board has one, else the sum of rails."""
        for name in INPUT_RAILS:
            if name in self.rails:
                return self.rails[name]
        return sum(self.rails.values()) if self.rails else None

    @property
    def power_source(self) -> str | None:
        for name in INPUT_RAILS:
            if name in self.rails:
                return name
        return "+".join(self.rails) if self.rails else None


def parse_line(line: str) -> TegraSample | None:
    """Parse one tegrastats line; None for a line that is not tegrastats output."""
    if "RAM " not in line and not _RAIL.search(line):
        return None
    s = TegraSample()
    if m := _TIME.match(line):
        s.stamp = m.group(1)
    if m := _RAM.search(line):
        s.ram_mb = (int(m.group(1)), int(m.group(2)))
    if m := _CPU.search(line):
        for core in m.group(1).split(","):
            load, _, mhz = core.strip().partition("%@")
            on = core.strip() != "off"
            s.cpu_load.append(float(load) if on and load else None)
            s.cpu_mhz.append(int(mhz) if on and mhz else None)
    for engine, load, mhz in _ENGINE.findall(line):
        clocks = [int(f) for f in mhz.split(",") if f] if mhz else []
        if engine == "GR3D":
            s.gpu_load, s.gpu_mhz = (float(load) if load else None), clocks
        else:
            s.emc_load, s.emc_mhz = (float(load) if load else None), (clocks or [None])[0]
    s.temps = {name: float(v) for name, v in _TEMP.findall(line)}
    for name, now, avg in _RAIL.findall(line):
        s.rails[name], s.rails_avg[name] = float(now), float(avg)
    for name, now in _RAIL_NOW.findall(line):
        s.rails.setdefault(name, float(now))
    return s


def energy_joules(times: list[float], watts: list[float], start: float, end: float) -> float:
    """Energy over [start, end] of a power trace sampled at `times` (trapezoids).

    The trace is linear between samples and held constant before the first and after the
    last sample, so a run shorter than one sampling interval still gets its share.
    """
    if not times or end <= start:
        return 0.0
    t = np.asarray(times, dtype=float)
    p = np.asarray(watts, dtype=float)
    inside = t[(t > start) & (t < end)]
    grid = np.concatenate([[start], inside, [end]])
    power = np.interp(grid, t, p)
    return float(np.sum((power[1:] + power[:-1]) / 2 * np.diff(grid)))


class TegrastatsMonitor:
    """Run `tegrastats --interval MS` in the background and keep (time, sample) pairs.

    Use as a context manager; `available()` says whether tegrastats exists here.
    """

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats"):
        self.interval_ms, self.command = interval_ms, command
        self.samples: list[tuple[float, TegraSample]] = []
        self._proc = self._thread = None

    def available(self) -> bool:
        return shutil.which(self.command) is not None

    def __enter__(self):
        self._proc = subprocess.Popen(
            [self.command, "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            sample = parse_line(line)
            if sample is not None:
                self.samples.append((time.monotonic(), sample))

    def __exit__(self, *exc):
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(timeout=5)

    def energy(self, start: float, end: float) -> dict | None:
        """Energy (J) and mean power (W) over a monotonic-clock interval; None without power."""
        trace = [(t, s.power_mw) for t, s in self.samples if s.power_mw is not None]
        if not trace:
            return None
        times, mw = zip(*trace)
        joules = energy_joules(list(times), [w / 1e3 for w in mw], start, end)
        return {
            "joules": joules,
            "mean_w": joules / (end - start),
            "rail": self.samples[-1][1].power_source,
            "samples": sum(start <= t <= end for t in times),
        }

    def clocks(self) -> dict:
        """Median GPU / EMC / CPU clocks (MHz) and GPU load over the samples."""
        got = [s for _, s in self.samples]

        def median(values):
            values = [v for v in values if v is not None]
            return float(np.median(values)) if values else None

        return {
            "gpu_mhz": median(max(s.gpu_mhz) if s.gpu_mhz else None for s in got),
            "gpu_load": median(s.gpu_load for s in got),
            "emc_mhz": median(s.emc_mhz for s in got),
            "cpu_mhz": median(v for s in got for v in s.cpu_mhz),
        }


def nvpmodel_mode(command: str = "nvpmodel") -> dict | None:
    """The Jetson power mode from `nvpmodel -q` ({"name", "id"}), or None off a Jetson."""
    if shutil.which(command) is None:
        return None
    try:
        out = subprocess.run(
            [command, "-q"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvpmodel -q failed: %s", exc)
        return None
    return parse_nvpmodel(out)


def parse_nvpmodel(text: str) -> dict | None:
    """Parse `nvpmodel -q` output: 'NV Power Mode: MAXN' then the mode number."""
    m = re.search(r"NV Power Mode:\s*(\S+)(?:\s+(\d+))?", text)
    if not m:
        return None
    return {"name": m.group(1), "id": int(m.group(2)) if m.group(2) else None}
