"""The GPU benchmark runs end to end on a tiny generator (CI has no GPU): every cell measured."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_measures_every_cell_of_a_tiny_generator():
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny"],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    cells = {(int(row[0]), int(row[1])): row for row in rows}
    assert sorted(cells) == [(2, 1), (2, 2), (4, 1), (4, 2)]
    for layer in (2, 4):
        one, two = (float(cells[layer, batch][6]) for batch in (1, 2))
        assert one > 0 and abs(two / one - 2) < 1e-2  # FLOPs per iteration scale with the batch
        assert all(float(cells[layer, batch][4]) > 0 for batch in (1, 2))
    # a deeper cut runs more of the generator per code: more FLOPs
    assert float(cells[4, 1][6]) > float(cells[2, 1][6])
