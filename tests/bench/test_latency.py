import statistics
import time

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


def test_times_what_the_call_takes():
    runner = fake_runner("sleep", lambda: time.sleep(0.02))
    seconds = time_once(runner)
    assert 0.02 <= seconds < 0.5  # a sleep never returns early; a loaded machine adds delay


def test_harness_overhead_against_a_bare_loop():
    runner = fake_runner("sleep", lambda: time.sleep(0.005))
    progress_calls = []
    result = harness_overhead(
        runner, iters=10, rounds=3, progress=lambda *a, **k: progress_calls.append(a)
    )
    assert len(progress_calls) == 30  # the harness really ran, with its progress callback
    assert result["bare_ms"] >= 5 and result["harness_ms"] >= 5
    # The timed region sits inside the loop, so reported latency never exceeds its wall time;
    # both stay near the bare loop (loose bound: sleeps overshoot on a loaded 2-core box).
    assert result["harness_ms"] <= result["harness_wall_ms"]
    assert abs(result["latency_overhead"]) < 0.25 and abs(result["wall_overhead"]) < 0.25


def test_peak_memory_of_a_large_allocation():
    def allocate():
        block = np.ones(50_000_000)  # 381 MiB, returned to the OS when freed
        return block.sum()

    result = peak_memory(allocate, "cpu")
    assert result["added_mb"] > 300 and result["peak_mb"] > result["added_mb"]
    assert "VmHWM" in result["method"]
