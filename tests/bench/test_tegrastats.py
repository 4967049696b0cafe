"""The tegrastats parser on real lines, energy integration, and the background monitor."""

import os
import stat
import time

import pytest

from pbd_deploy.bench.tegrastats import (
    TegrastatsMonitor,
    energy_joules,
    nvpmodel_mode,
    parse_line,
    parse_nvpmodel,
)

# Verbatim tegrastats output posted publicly. AGX Orin, JetPack 6 (L4T r36), from the
# DataDog agent's jetson check tests (r36Sample):
ORIN_JP6 = "RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,0%@2201] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off  NVDEC    off NVJPG off NVJPG1    off         VIC        off          OFA           off          NVDLA0    off       NVDLA1     off          PVA0_FREQ off         APE           174        cpu@53.062C soc2@48.25C soc0@48.843C  gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW VDD_CPU_CV 4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW"  # noqa: E501
# Orin NX/Nano, JetPack 5 (mW units, VDD_IN input rail), same source (voltageUnitSample):
ORIN_NX_JP5 = "RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) CPU [6%@729,9%@729,5%@729,16%@729,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@611 VIC_FREQ 729 APE 174 CV0@45.812C CPU@47.937C SOC2@46.093C SOC0@46.968C CV1@46.406C GPU@45.875C tj@48.875C SOC1@48.875C CV2@45.75C VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW VDD_SOC 1424mW/1424mW"  # noqa: E501
# AGX Orin 32GB, JetPack 6, with the timestamp tegrastats prints there (from a public
# project's setup notes for its Orin machines, host "rudi2"):
ORIN_STAMPED = "09-01-2025 10:55:25 RAM 1313/30697MB (lfb 37x4MB) SWAP 0/15348MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,off,off,off,off] GR3D_FREQ 0% cpu@43.343C soc2@39.812C soc0@40.312C tj@43.343C soc1@38.843C VDD_GPU_SOC 1995mW/1995mW VDD_CPU_CV 0mW/0mW VIN_SYS_5V0 2524mW/2524mW"  # noqa: E501
# AGX Xavier, JetPack 4.2 (no mW unit), from martinkersner/gtop pull request 7:
XAVIER = "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"  # noqa: E501
# Xavier NX (VDD_IN without units), DataDog agent (xavierNxSample):
XAVIER_NX = "RAM 4412/7772MB (lfb 237x4MB) SWAP 139/3886MB (cached 2MB) CPU [9%@1190,6%@1190,6%@1190,5%@1190,4%@1190,8%@1267] EMC_FREQ 10%@1600 GR3D_FREQ 62%@306 APE 150 MTS fg 0% bg 0% AO@41.5C GPU@43C PMIC@100C AUX@41.5C CPU@43.5C thermal@42.55C VDD_IN 4067/4067 VDD_CPU_GPU_CV 738/738 VDD_SOC 1353/1353"  # noqa: E501
# Jetson Nano (POM_5V_IN), DataDog agent (nanoSample):
NANO = "RAM 534/3964MB (lfb 98x4MB) SWAP 5/1982MB (cached 1MB) IRAM 0/252kB(lfb 252kB) CPU [16%@204,9%@204,0%@204,0%@204] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@34C CPU@36.5C PMIC@100C GPU@36C AO@39.5C thermal@36.25C POM_5V_IN 1022/1022 POM_5V_GPU 0/0 POM_5V_CPU 204/204"  # noqa: E501


def test_orin_jetpack6():
    s = parse_line(ORIN_JP6)
    assert s.rails == {"VDD_GPU_SOC": 3205, "VDD_CPU_CV": 4405, "VIN_SYS_5V0": 4767}
    assert s.power_mw == 3205 + 4405 + 4767  # AGX Orin has no input rail: module = sum
    assert s.gpu_load == 0 and s.gpu_mhz == [305, 305]
    assert (s.emc_load, s.emc_mhz) == (1, 2133)
    assert s.cpu_mhz == [729] * 4 + [2201] * 8 and s.cpu_load[5] == 100
    assert s.ram_mb == (29114, 30697) and s.temps["tj"] == pytest.approx(53.062)


def test_orin_nx_jetpack5_uses_the_input_rail():
    s = parse_line(ORIN_NX_JP5)
    assert s.power_mw == 5299 and s.power_source == "VDD_IN"
    assert s.rails["VDD_SOC"] == 1424 and s.gpu_mhz == [611]
    assert s.cpu_load == [6, 9, 5, 16, None, None, None, None]
    assert s.cpu_mhz[4:] == [None] * 4
    assert s.temps["CV0"] == pytest.approx(45.812)


def test_timestamped_orin_line():
    s = parse_line(ORIN_STAMPED)
    assert s.stamp == "09-01-2025 10:55:25"
    assert s.rails["VDD_CPU_CV"] == 0 and s.power_mw == 1995 + 0 + 2524
    assert s.gpu_load == 0 and s.gpu_mhz == [] and s.emc_load is None


def test_xavier_rails_without_units():
    s = parse_line(XAVIER)
    assert s.rails == {
        "GPU": 463, "CPU": 618, "SOC": 2936, "CV": 0, "VDDRQ": 309, "SYS5V": 3306
    }  # fmt: skip
    assert "RAM" not in s.rails and "SWAP" not in s.rails  # 14700/15692MB is no rail
    assert s.power_mw == sum(s.rails.values())
    assert s.emc_load == 0 and s.emc_mhz is None and s.cpu_mhz == [1190] * 8


def test_xavier_nx_and_nano_input_rails():
    nx, nano = parse_line(XAVIER_NX), parse_line(NANO)
    assert (nx.power_mw, nx.gpu_load, nx.gpu_mhz, nx.emc_mhz) == (4067, 62, [306], 1600)
    assert nx.cpu_mhz[-1] == 1267
    assert (nano.power_mw, nano.power_source) == (1022, "POM_5V_IN")
    assert nano.rails["POM_5V_CPU"] == 204 and "IRAM" not in nano.rails


def test_other_lines_are_not_samples():
    assert parse_line("tegrastats: permission denied") is None
    assert parse_line("") is None


def test_energy_of_constant_and_ramping_power():
    times = [0.0, 1.0, 2.0, 3.0]
    assert energy_joules(times, [5.0] * 4, 0.5, 2.5) == pytest.approx(10.0)
    # P(t) = 2t: the integral from 1 to 3 is t^2 |1..3 = 8, sampled or not at the ends.
    assert energy_joules(times, [0.0, 2.0, 4.0, 6.0], 1.0, 3.0) == pytest.approx(8.0)
    assert energy_joules(times, [0.0, 2.0, 4.0, 6.0], 1.5, 2.5) == pytest.approx(4.0)
    # Outside the samples the power is held at the nearest one.
    assert energy_joules([1.0], [3.0], 0.0, 2.0) == pytest.approx(6.0)


def _fake_tool(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_monitor_reads_a_running_tegrastats(tmp_path, monkeypatch):
    """A stand-in tegrastats prints the real Orin NX line every 20 ms; energy follows it."""
    line = ORIN_NX_JP5.replace("'", "")
    _fake_tool(tmp_path, "tegrastats", f"while true; do echo '{line}'; sleep 0.02; done\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monitor = TegrastatsMonitor(interval_ms=20)
    assert monitor.available()
    with monitor:
        time.sleep(0.15)
        start = time.monotonic()
        time.sleep(0.3)
        end = time.monotonic()
    energy = monitor.energy(start, end)
    assert energy["mean_w"] == pytest.approx(5.299)
    assert energy["joules"] == pytest.approx(5.299 * (end - start))
    assert energy["rail"] == "VDD_IN" and energy["samples"] >= 3
    assert monitor.clocks()["gpu_mhz"] == 611


def test_nvpmodel(tmp_path, monkeypatch):
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel("NV Power Mode: 15W\n") == {"name": "15W", "id": None}
    assert parse_nvpmodel("command not found") is None
    _fake_tool(tmp_path, "nvpmodel", 'echo "NV Power Mode: MODE_30W"; echo 2\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert nvpmodel_mode() == {"name": "MODE_30W", "id": 2}


def test_bench_reports_energy_per_window_on_a_jetson(model_dirs, tmp_path, monkeypatch):
    """With tegrastats and nvpmodel present, every row gets power, energy and the mode."""
    from pbd_deploy.bench.config import BenchConfig
    from pbd_deploy.bench.power import power_monitor
    from pbd_deploy.bench.run import run_bench

    line = ORIN_NX_JP5.replace("'", "")
    _fake_tool(tmp_path, "tegrastats", f"while true; do echo '{line}'; sleep 0.02; done\n")
    _fake_tool(tmp_path, "nvpmodel", 'echo "NV Power Mode: MAXN"; echo 0\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert isinstance(power_monitor(), TegrastatsMonitor)
    (row,) = run_bench([model_dirs[0]], BenchConfig(warmup=0, iters=3, threads=1))["rows"]
    power = row["power"]
    assert power["mean_w"] == pytest.approx(5.299) and power["rail"] == "VDD_IN"
    assert power["joules_per_window"] == pytest.approx(power["joules"] / 3)
    assert power["nvpmodel"] == {"name": "MAXN", "id": 0}
    assert power["clocks"]["emc_mhz"] == 2133


def test_no_power_source_off_a_jetson(monkeypatch, tmp_path):
    from pbd_deploy.bench import power

    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats here
    monkeypatch.setattr(power.JtopMonitor, "available", lambda self: False)
    assert power.power_monitor() is None
