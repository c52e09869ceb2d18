"""chatroom's regression guard: the two figures that a change on the hot path moves,
its servers' CPU per delivery (1,000 clients, 10 lines a second, servers and Redis on
one core) and its memory per idle connection (5,000 over two nodes).

    python3 scripts/bench_baseline.py write RESULTS_DIR bench/baseline.json    (full run)
    python3 scripts/bench_baseline.py compare RESULTS_DIR bench/baseline.json  (--quick)

Standard library only, so that `scripts/bench.sh --quick` needs no virtualenv.
"""

import json
import statistics
import sys
from pathlib import Path

# A change smaller than this is within the run-to-run noise measured on the 2-core box.
# Redis's share is a few tenths of a CPU second a run, counted in 10 ms ticks: a few
# ticks move it by a quarter.
NOISE = {"server_cpu_us_per_delivery": 0.10, "redis_cpu_us_per_delivery": 0.30, "kib_per_idle_connection": 0.10}


def reports(results: Path, prefix: str):
    """Every round's JSON line of one scenario, system and size."""
    found = []
    for path in sorted(results.glob(f"{prefix}-r*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return found


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def figures(results: Path):
    """The guarded figures of one run (None where a run is missing or did not hold)."""
    cpu = [r for r in reports(results, "cpu-chatroom-1000") if r.get("missing") == 0 and r.get("connect_failures") == 0]
    memory = reports(results, "memory-chatroom-5000")
    return {
        "server_cpu_us_per_delivery": median([r.get("server_cpu_us_per_delivery") for r in cpu]),
        "redis_cpu_us_per_delivery": median([r.get("redis_cpu_us_per_delivery") for r in cpu]),
        "kib_per_idle_connection": median([r.get("kib_per_connection") for r in memory]),
    }


LABELS = {
    "server_cpu_us_per_delivery": "servers' CPU µs per delivery (1,000 clients, 10 msg/s)",
    "redis_cpu_us_per_delivery": "Redis's CPU µs per delivery (same run)",
    "kib_per_idle_connection": "KiB per idle connection (5,000 over two nodes)",
}


def write(results: Path, baseline: Path):
    meta = {}
    meta_file = results / "meta.txt"
    if meta_file.exists():
        meta = dict(line.split("=", 1) for line in meta_file.read_text().splitlines() if "=" in line)
    data = {"date": meta.get("date"), "commit": meta.get("commit"), **figures(results)}
    baseline.parent.mkdir(parents=True, exist_ok=True)
    baseline.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {baseline}")


def compare(results: Path, baseline: Path):
    now = figures(results)
    try:
        base = json.loads(baseline.read_text())
    except (OSError, ValueError):
        base = {}
        print(f"no baseline at {baseline}: run scripts/bench.sh (the full run) to write one")
    print(f"\nchatroom now against the baseline of {base.get('date', '?')} (commit {base.get('commit', '?')}):\n")
    print(f"| {'figure':<58} | baseline | now    | change |")
    print(f"| {'-' * 58} | -------: | -----: | -----: |")
    for key, label in LABELS.items():
        b, n = base.get(key), now.get(key)
        change = "n/a"
        if b and n is not None:
            delta = (n - b) / b
            noise = NOISE[key]
            change = f"{delta:+.0%}" + (" worse" if delta > noise else " better" if delta < -noise else "")
        shown = lambda v: "n/a" if v is None else f"{v:.2f}"
        print(f"| {label:<58} | {shown(b):>8} | {shown(n):>6} | {change} |")
    print(f"\nRun-to-run noise is about 10 % (Redis's share: 30 %); the raw reports are in {results}.")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("write", "compare"):
        sys.exit(__doc__)
    action, results, baseline = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    (write if action == "write" else compare)(results, baseline)


if __name__ == "__main__":
    main()
