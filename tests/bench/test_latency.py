import statistics

import numpy as np
import pytest

from pbd_deploy.bench.latency import harness_overhead, measure, summarize, time_once, warm_up
from pbd_deploy.bench.memory import peak_memory
from pbd_deploy.bench.runners import Runner


def fake_runner(label, call):
    source = type("S", (), {"label": label})()
    return Runner(source=source, backend="torch", device="cpu", call=call)


def test_summary_matches_the_statistics_module():
    rng = np.random.default_rng(0)
    seconds = list(rng.uniform(0.01, 0.05, 101))
    stats = summarize(seconds)
    cuts = statistics.quantiles([1e3 * s for s in seconds], n=100, method="inclusive")
    assert stats["p50_ms"] == pytest.approx(cuts[49])
    assert stats["p90_ms"] == pytest.approx(cuts[89])
    assert stats["p99_ms"] == pytest.approx(cuts[98])
    assert stats["mean_ms"] == pytest.approx(1e3 * statistics.fmean(seconds))


def test_rounds_alternate_between_models():
    calls = []
    runners = [fake_runner(name, lambda n=name: calls.append(n)) for name in "abc"]
    warm_up(runners, 2)
    assert calls == list("aabbcc")
    calls.clear()
    samples = measure(runners, 3)
    assert calls == list("abcabcabc") and [len(s) for s in samples] == [3, 3, 3]


class FakeClock:
    """perf_counter for the harness: time moves only when a fake call says so (no sleeps,
    so a loaded machine cannot change what the test sees)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    from pbd_deploy.bench import latency

    fake = FakeClock()
    monkeypatch.setattr(latency, "time", fake)
    return fake


def test_times_what_the_call_takes(clock):
    runner = fake_runner("work", lambda: clock.advance(0.02))
    assert time_once(runner) == pytest.approx(0.02, abs=1e-12)


def test_harness_overhead_against_a_bare_loop(clock):
    runner = fake_runner("work", lambda: clock.advance(0.005))
    progress_calls = []

    def progress(*args, **kwargs):  # the harness's bookkeeping: 1 ms per call
        progress_calls.append(args)
        clock.advance(0.001)

    result = harness_overhead(runner, iters=10, rounds=3, progress=progress)
    assert len(progress_calls) == 30  # the harness really ran, with its progress callback
    # Calls take 5 ms, the bookkeeping 1 ms outside the timed region: the reported latency
    # is the bare loop's, and only the wall-clock figure charges the bookkeeping.
    assert result["bare_ms"] == pytest.approx(5) and result["harness_ms"] == pytest.approx(5)
    assert result["harness_wall_ms"] == pytest.approx(6)
    assert result["latency_overhead"] == pytest.approx(0, abs=1e-9)
    assert result["wall_overhead"] == pytest.approx(0.2)


def test_peak_memory_of_a_large_allocation():
    def allocate():
        block = np.ones(50_000_000)  # 381 MiB, returned to the OS when freed
        return block.sum()

    result = peak_memory(allocate, "cpu")
    assert result["added_mb"] > 300 and result["peak_mb"] > result["added_mb"]
    assert "VmHWM" in result["method"]
