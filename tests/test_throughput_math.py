"""The arithmetic of benchmarks/throughput.py: model FLOPs, throughput against a peak, paired speed ratios."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("throughput", Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(spec)
spec.loader.exec_module(throughput)


def test_model_flops():
    assert throughput.train_flops(10_800_000, 26_302) == pytest.approx(6 * 10.8e6 * 26_302)  # 1.70 TFLOP: MiniLM-L6 on 2,000 SST-2
    assert throughput.train_flops(100, 10, epochs=2) == 12_000
    assert throughput.inference_flops(100, 10) == 2_000
    assert throughput.matmul_flops(4096) == 2 * 4096**3


def test_throughput_against_the_peak():
    row = throughput.throughput(flops=1.7e12, examples=2000, seconds=20.0, peak_gflops=170.0)
    assert row == {"examples_per_s": 100.0, "model_gflops": 85.0, "pct_of_peak": 50.0}
    assert throughput.throughput(1e9, 1, 1.0, None)["pct_of_peak"] is None


def test_paired_ratio_is_the_median_of_per_round_speedups():
    assert throughput.paired_ratio([10, 10, 20], [20, 15, 60]) == 2.0  # 2.0, 1.5, 3.0
    assert throughput.paired_ratio([], []) is None
