"""Start-up time of the command line: ``mganprior --help``, ``mganprior invert --help`` and a
one-iteration ``invert`` (process start to exit, one image), with the modules each imports,
for one or more checkouts side by side in one run.

    python benchmarks/startup.py [--checkout DIR ...] [--repeats 5]

Each checkout is a folder with its own ``.venv`` (default: this one). Times are medians of
``--repeats`` runs; modules are counted with ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(python: Path, cwd: Path, args: list[str], repeats: int) -> tuple[float, int]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([str(python), "-m", "mganprior", *args], cwd=cwd, env=environment,
                       capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    traced = subprocess.run([str(python), "-X", "importtime", "-m", "mganprior", *args],
                            cwd=cwd, env=environment, capture_output=True, text=True,
                            check=True)
    modules = sum(line.startswith("import time:") for line in traced.stderr.splitlines()) - 1
    return statistics.median(times), modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", nargs="+", type=Path, default=[ROOT])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "images"
        image.mkdir()
        from PIL import Image

        Image.new("RGB", (64, 64), (120, 90, 60)).save(image / "flat.png")
        commands = {
            "mganprior --help": ["--help"],
            "mganprior invert --help": ["invert", "--help"],
            "invert, 1 iteration (bedroom-pggan64, 1 image)": [
                "invert", "--generator", "bedroom-pggan64", "--images", str(image),
                "--iterations", "1", "--codes", "2", "--quiet", "--out"],
        }
        print(f"| command | {' | '.join(str(c) for c in args.checkout)} |")
        print(f"|---|{'---|' * len(args.checkout)}")
        for label, command in commands.items():
            cells = []
            for number, checkout in enumerate(args.checkout):
                call = list(command)
                if call[-1] == "--out":
                    call.append(str(Path(scratch) / f"run-{number}-{time.monotonic_ns()}"))
                seconds, modules = measure(checkout / ".venv" / "bin" / "python", checkout,
                                           call, 1 if "--out" in call else args.repeats)
                cells.append(f"{seconds:.2f} s, {modules} modules")
            print(f"| {label} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
