# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""How long the command line takes to answer `--help`, against `python -c "import diffusers"`, side by side.

Each round runs every command once, in a shuffled order, as a fresh process (so the OS file cache is warm for all
of them alike); the table gives the median wall time of each command over the rounds and its ratio to the median
of `import diffusers`.

    python benchmarks/bench_startup.py --repeats 7
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def commands():
    cli = os.path.join(BIN, "ddpm-ext")
    if not os.path.exists(cli):  # not installed as a console script: the same entry point through -m
        cli = None
    ddpm = [cli] if cli else [sys.executable, "-m", "ddpm_ext.cli"]
    return {
        'python -c "import diffusers"': [sys.executable, "-c", "import diffusers"],
        'python -c "import ddpm_ext"': [sys.executable, "-c", "import ddpm_ext"],
        "ddpm-ext --help": ddpm + ["--help"],
        "ddpm-ext train --help-training": ddpm + ["train", "--help-training"],
        "ddpm-ext train --resolution 0 (a bad flag)": ddpm + ["train", "--no-launch", "--resolution", "0"],
    }


def time_once(argv) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=600)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="rounds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the order within each round")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    cmds = commands()
    rng = random.Random(args.seed)
    times = {name: [] for name in cmds}
    for name, argv_ in cmds.items():  # one untimed warm-up each (file cache, .pyc)
        time_once(argv_)
    for _ in range(args.repeats):
        order = list(cmds)
        rng.shuffle(order)
        for name in order:
            times[name].append(time_once(cmds[name]))
    base = statistics.median(times['python -c "import diffusers"'])
    print(f"| command | median s ({args.repeats} runs) | min s | × import diffusers |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| `{name}` | {med:.3f} | {min(ts):.3f} | {med / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
