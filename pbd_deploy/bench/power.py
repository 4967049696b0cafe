"""Choose the power source of a run: tegrastats, else jetson-stats (jtop), else none."""

from __future__ import annotations

import importlib.util
import threading
import time

from pbd_deploy.bench.tegrastats import TegraSample, TegrastatsMonitor
from pbd_deploy.optional import require


class JtopMonitor(TegrastatsMonitor):
    """Samples jetson-stats' `jetson.power` (jtop 4.x: {"rail": ..., "tot": {"power": mW}}).

    Used only where tegrastats is not on the PATH (e.g. a container with the jtop socket).
    """

    def __init__(self, interval_ms: int = 100):
        super().__init__(interval_ms)
        self._stop = threading.Event()

    def available(self) -> bool:
        return importlib.util.find_spec("jtop") is not None

    def __enter__(self):
        jtop = require("jtop", "jetson")
        self._jetson = jtop.jtop(interval=self.interval_ms / 1e3)
        self._jetson.start()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set() and self._jetson.ok():
            power = self._jetson.power or {}
            rails = {k: float(v["power"]) for k, v in power.get("rail", {}).items()}
            if "tot" in power:
                rails["VDD_IN"] = float(power["tot"]["power"])  # the module input total
            self.samples.append((time.monotonic(), TegraSample(rails=rails)))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._jetson.close()


def power_monitor(interval_ms: int = 100) -> TegrastatsMonitor | None:
    """A monitor for this machine, or None where neither tegrastats nor jtop exists."""
    for monitor in (TegrastatsMonitor(interval_ms), JtopMonitor(interval_ms)):
        if monitor.available():
            return monitor
    return None
