"""Turns one run of scripts/bench.sh into the results part of docs/benchmarks.md and its
charts. Only the part between the results markers is rewritten; the rest of the page
(method notes, the tuning log) is kept as written.

    python scripts/bench_report.py RESULTS_DIR DOCS_DIR
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import bench_massif  # noqa: E402

BEGIN = "<!-- results:begin (written by scripts/bench_report.py) -->"
END = "<!-- results:end -->"
SYSTEMS = [
    ("chatroom", "chatroom"),
    ("node", "Socket.IO 4 on Node + redis-adapter"),
    ("flask", "Flask-SocketIO (replaced service)"),
]
COLOURS = {"chatroom": "#2b6cb0", "node": "#3c873a", "flask": "#a0a0a0"}


def load(results: Path, name: str):
    """The JSON line of one run, or None when it did not run or printed none."""
    path = results / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def rounds_of(results: Path, prefix: str):
    """Every round's report of one scenario, system and size."""
    reports = []
    for path in sorted(results.glob(f"{prefix}-r*.json")):
        report = load(results, path.stem)
        if report is not None:
            reports.append(report)
    return reports


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, none="none"):
    if value is None:
        return none
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or not b:
        return "n/a" if a is None else "∞ (peer held none)"
    return f"{a / b:.1f}x"


def r_held(report):
    """A fixed-rate run that held: nothing lost or dropped, p99 within 250 ms."""
    return (
        report.get("connect_failures") == 0
        and report.get("missing") == 0
        and report.get("disconnects") == 0
        and report.get("latency_ms_p99", 1e9) <= 250
    )


def why_not_held(report):
    if report.get("connect_failures"):
        return f"{report['connect_failures']} clients could not connect"
    if report.get("missing") or report.get("disconnects"):
        return f"missing {report.get('missing')}, disconnects {report.get('disconnects')}"
    return f"p99 {report.get('latency_ms_p99', 0):.1f} ms"


def by_size(results: Path, sizes, scenario: str, summarize):
    """summarize(every round's reports) for each system and size that ran the scenario."""
    table = {}
    for n in sizes:
        for system, _ in SYSTEMS:
            reports = rounds_of(results, f"{scenario}-{system}-{n}")
            if reports:
                table[(system, n)] = summarize(reports)
    return table


def cpu_summary(reports):
    """CPU per delivery over the rounds that held."""
    held_runs = [r for r in reports if r_held(r)]
    return {
        "rate": reports[0]["target_rate"],
        "server": median([r.get("server_cpu_us_per_delivery") for r in held_runs]),
        "redis": median([r.get("redis_cpu_us_per_delivery") for r in held_runs]),
        "runs": [r.get("server_cpu_us_per_delivery") if r_held(r) else None for r in reports],
        "p99": median([r["latency_ms_p99"] for r in held_runs]),
        "why": [why_not_held(r) for r in reports if not r_held(r)],
    }


def save(fig, ax, path):
    """Finishes a chart and writes it as SVG."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    results, docs = Path(sys.argv[1]), Path(sys.argv[2])
    meta = dict(
        line.split("=", 1) for line in (results / "meta.txt").read_text().splitlines() if "=" in line
    )
    sizes = [int(n) for n in meta.get("clients", "100 1000 5000").split()]

    # Highest rate held, per size and system: medians over rounds (a round that held
    # nothing counts as 0).
    held = by_size(
        results,
        sizes,
        "rampup",
        lambda reports: {
            "rate": median([r.get("held_rate") or 0.0 for r in reports]),
            "deliveries": median([r.get("held_deliveries_per_sec") or 0.0 for r in reports]),
            "runs": [r.get("held_rate") for r in reports],
            "stopped": [r.get("stopped") for r in reports],
        },
    )
    latency = {}
    for system, _ in SYSTEMS:
        reports = rounds_of(results, f"latency-{system}-1000")
        # A round whose clients could not all connect measured something else.
        measured = [r for r in reports if r["connect_failures"] == 0 and r["sent"] > 0]
        if reports:
            latency[system] = {
                "p50": median([r["latency_ms_p50"] for r in measured]),
                "p99": median([r["latency_ms_p99"] for r in measured]),
                "clean": all(r["missing"] == 0 and r["disconnects"] == 0 for r in measured),
                "order": sum(r["order_violations"] for r in measured),
                "rounds": len(measured),
                "failed": [r["connect_failures"] for r in reports if r not in measured],
            }
    memory = {}
    for system, _ in SYSTEMS:
        reports = rounds_of(results, f"memory-{system}-5000")
        if reports:
            memory[system] = {
                "kib": median([r["kib_per_connection"] for r in reports]),
                "failures": sum(r["failures"] for r in reports),
            }
    capacity = {name: load(results, f"capacity-chatroom-{name}") for name in ("1node", "6nodes")}
    # CPU per delivery at a fixed rate; a run counts only when it held (nothing lost,
    # p99 within 250 ms), so a system that falls behind is "n/a", not cheap.
    cpu = by_size(results, sizes, "cpu", cpu_summary)

    lines = [BEGIN, ""]
    lines += [
        f"Run of {meta.get('date', '?')} at commit `{meta.get('commit', '?')}`, "
        f"{meta.get('rounds', '?')} rounds (medians shown).",
        "",
        f"- Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('memory', '?')}, "
        f"Linux {meta.get('kernel', '?')}; servers, Redis and the load tool on the same box (pinned apart "
        "only for CPU per delivery).",
        f"- chatroom: {meta.get('rustc', '?')}, release build; Redis {meta.get('redis', '?')}.",
        f"- Socket.IO on Node: socket.io {meta.get('socket.io', '?')}, @socket.io/redis-adapter "
        f"{meta.get('redis-adapter', '?')}, Node {meta.get('node', '?')}.",
        f"- Flask-SocketIO {meta.get('flask-socketio', '?')} (threading mode, Redis message queue), "
        f"Python {meta.get('python', '?')}.",
        "",
        "### CPU per delivery (servers on CPU 1 with Redis, the load tool on CPU 0)",
        "",
        "The servers' CPU time (user + system of both nodes, from `/proc/PID/stat`) over the",
        "measured 20 s and the 3 s after, divided by the lines their clients received; Redis's",
        "apart. 10 senders at a fixed rate; n/a where a system did not hold it (something",
        "lost, or p99 over 250 ms).",
        "",
        "| clients | rate | " + " | ".join(f"{label} µs (Redis µs)" for _, label in SYSTEMS) + " | chatroom ÷ Node |",
        "| ---: | ---: | " + " | ".join("---:" for _ in SYSTEMS) + " | ---: |",
    ]
    for n in sizes:
        row = [c for c in (cpu.get((system, n)) for system, _ in SYSTEMS) if c]
        if not row:
            continue
        cells = []
        for system, _ in SYSTEMS:
            c = cpu.get((system, n))
            if c is None:
                cells.append("not run")
            elif c["server"] is None:
                cells.append("n/a")
            else:
                cells.append(f"{fmt(c['server'], 1)} ({fmt(c['redis'], 1)})")
        ours, node = cpu.get(("chatroom", n), {}).get("server"), cpu.get(("node", n), {}).get("server")
        share = "n/a" if ours is None or not node else f"{ours / node:.2f}"
        deliveries = row[0]["rate"] * n
        lines.append(f"| {n:,} | {fmt(row[0]['rate'])} msg/s ({fmt(deliveries)} deliveries/s) | " + " | ".join(cells) + f" | {share} |")
    lines += ["", "Each round's servers' µs per delivery (n/a: did not hold):", ""]
    for n in sizes:
        for system, label in SYSTEMS:
            c = cpu.get((system, n))
            if c:
                runs = ", ".join(fmt(r, 1, "n/a") for r in c["runs"])
                lines.append(f"- {n:,} clients, {label}: {runs}" + (f"; {c['why'][0]}" if c["why"] else ""))
    lines += [
        "",
        "### Highest send rate held (p99 ≤ 250 ms, nothing lost)",
        "",
        "| clients | " + " | ".join(label for _, label in SYSTEMS) + " | chatroom ÷ Node | chatroom ÷ Flask |",
        "| ---: | " + " | ".join("---:" for _ in SYSTEMS) + " | ---: | ---: |",
    ]
    for n in sizes:
        cells = []
        for system, _ in SYSTEMS:
            h = held.get((system, n))
            if h is None:
                cells.append("not run")
            elif not h["rate"]:
                cells.append("none held")
            else:
                cells.append(f"{fmt(h['rate'], 1)} msg/s ({fmt(h['deliveries'])} deliveries/s)")
        ours = held.get(("chatroom", n), {}).get("deliveries")
        node = held.get(("node", n), {}).get("deliveries")
        flask = held.get(("flask", n), {}).get("deliveries")
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {ratio(ours, node)} | {ratio(ours, flask)} |")
    lines += ["", "Each round's highest rate held (msg/s) and why its ramp stopped:", ""]
    for n in sizes:
        for system, label in SYSTEMS:
            h = held.get((system, n))
            if h:
                runs = ", ".join(fmt(r, 1) if r else "none" for r in h["runs"])
                lines.append(f"- {n:,} clients, {label}: {runs}; stopped: {h['stopped'][0]}")
    lines += [
        "",
        "### Latency at 1,000 clients, 10 msg/s (10 senders, 10 s)",
        "",
        "| system | p50 ms | p99 ms | nothing lost | lines out of order | rounds measured |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for system, label in SYSTEMS:
        if system in latency:
            l = latency[system]
            failed = "".join(f"; a round where {n:,} of 1,000 clients could not connect" for n in l["failed"])
            lines.append(
                f"| {label} | {fmt(l['p50'], 2, 'n/a')} | {fmt(l['p99'], 2, 'n/a')} | "
                f"{'yes' if l['clean'] else 'no'} | {l['order']} | {l['rounds']}{failed} |"
            )
    lines += [
        "",
        "### Memory per idle connection (5,000 connections over two nodes, server RSS growth)",
        "",
        "| system | KiB per connection | failed connections |",
        "| --- | ---: | ---: |",
    ]
    for system, label in SYSTEMS:
        if system in memory:
            lines.append(f"| {label} | {fmt(memory[system]['kib'], 1)} | {memory[system]['failures']} |")
    lines += [
        "",
        "### Memory per idle connection by setting (chatroom, 5,000 connections over two nodes)",
        "",
        "Each of the socket library's settings that chatroom passes on, one changed at a time",
        "from chatroom's defaults (`--ws-read-buffer-bytes 1024`, `--client-queue 1024`, pings",
        "every 25 s with a 20 s timeout); the growth of both nodes' RSS divided by 5,000.",
        "",
        "| setting | KiB per connection | against the defaults |",
        "| --- | ---: | ---: |",
    ]
    base = memory.get("chatroom", {}).get("kib")
    if base is not None:
        lines.append(f"| defaults | {fmt(base, 1)} | |")
    # scripts/bench.sh writes each setting's flags beside its runs.
    for flags_file in sorted(results.glob("memsetting-*.flags")):
        flags = flags_file.read_text().strip()
        reports = rounds_of(results, f"{flags_file.stem}-5000")
        kib = median([r["kib_per_connection"] for r in reports])
        if kib is not None:
            delta = "" if base is None else f"{kib - base:+.1f} KiB"
            lines.append(f"| `{flags}` | {fmt(kib, 1)} | {delta} |")
    before, after = results / "massif-before.txt", results / "massif-after.txt"
    if before.exists() and after.exists():
        lines += [
            "",
            "### Where an idle connection's memory goes (chatroom, massif)",
            "",
            "One node with Redis under `valgrind --tool=massif`; detailed heap snapshots before",
            "and while 1,000 idle WebSocket connections were held; the growth divided by 1,000,",
            "by the first frame of each allocation's stack outside the standard library and the",
            "runtime (`scripts/bench_massif.py`). The heap only: RSS adds the allocator's overhead",
            "and the kernel's socket buffers are not in either.",
            "",
        ]
        lines += bench_massif.table(bench_massif.breakdown(before, after, 1000))
    storm = {system: rounds_of(results, f"storm-{system}-10000") for system in ("chatroom", "node")}
    if any(storm.values()):
        lines += [
            "",
            "### Reconnect storm (two nodes behind nginx, 10,000 clients, one node killed)",
            "",
            "10,000 clients over two nodes behind nginx (10 clients a source address, 10 senders",
            "with a line every 5 s each; chatroom's in 100 rooms of 100, Node's in its one room);",
            "once all have joined and chatted 10 s, the load tool",
            "kills node 1 (SIGKILL). Its clients come back through nginx with the page's jittered",
            "backoff (0.5 s doubling to 10 s, each delay in the upper half of its step); chatroom's",
            "resume after their last position (lines lost and duplicated are counted for every",
            "client), Node's only reconnect. chatroom runs with its default limits per client",
            "address (`--trusted-proxies`). Servers, Redis, nginx and the tool share the two cores.",
            "Times are from the kill; the survivor's CPU and Redis's are their busiest second after",
            "it (% of one core) and their CPU seconds until all were back.",
            "",
            "| system | dropped | back 50 % | 99 % | 100 % | lost | duplicated | survivor peak RSS | survivor CPU peak (s) | Redis CPU peak (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for system, label in SYSTEMS:
            reports = storm.get(system)
            if not reports:
                continue
            ms = lambda key: fmt(median([r.get(key) for r in reports]), 0, "n/a")  # noqa: E731
            legacy = reports[0].get("legacy")
            lost = "n/a (no resume)" if legacy else str(sum(r["lost"] for r in reports))
            dup = "n/a" if legacy else str(sum(r["duplicated"] for r in reports))
            rss = median([r["survivor_rss_peak_kib"] for r in reports])
            lines.append(
                f"| {label} | {fmt(median([r['dropped'] for r in reports]))} | {ms('back_ms_p50')} ms | "
                f"{ms('back_ms_p99')} ms | {ms('back_ms_p100')} ms | {lost} | {dup} | "
                f"{fmt(rss / 1024 if rss else None, 0, 'n/a')} MiB | "
                f"{fmt(median([r['survivor_cpu_peak_pct'] for r in reports]))} % "
                f"({fmt(median([r['survivor_cpu_storm_secs'] for r in reports]), 1)} s) | "
                f"{fmt(median([r['redis_cpu_peak_pct'] for r in reports]))} % "
                f"({fmt(median([r['redis_cpu_storm_secs'] for r in reports]), 1)} s) |"
            )
        lines += ["", "Each round (dropped; back 50 / 99 / 100 % in ms; lost, duplicated, resets, false leaves):", ""]
        for system, label in SYSTEMS:
            for r in storm.get(system) or []:
                checks = "" if r.get("legacy") else (
                    f"; lost {r['lost']}, duplicated {r['duplicated']}, resets {r['resets']}, "
                    f"false leaves {r['false_leaves']}"
                )
                lines.append(
                    f"- {label}: {r['dropped']:,} dropped, {r['back']:,} back; "
                    f"{fmt(r.get('back_ms_p50'), 0, 'n/a')} / {fmt(r.get('back_ms_p99'), 0, 'n/a')} / "
                    f"{fmt(r.get('back_ms_p100'), 0, 'n/a')} ms; {r['lines_seen']:,} lines{checks}; "
                    f"failed attempts {r['failed_attempts']:,}"
                )
    lines += ["", "### Connections held (chatroom)", ""]
    for name, what in (("1node", "one node"), ("6nodes", "six nodes")):
        c = capacity.get(name)
        if c:
            lines.append(
                f"- {what}: {c['connected']:,} of {c['asked']:,} connected, {c['failures']} failed, "
                f"{c['dropped_while_held']} dropped while held for {c['hold_secs']} s, "
                f"{fmt(c['kib_per_connection'], 1)} KiB per connection"
                + (f" (first error: {c['first_error']})" if c.get("first_error") else "")
            )

    # Goals, as the issues state them.
    lines += ["", "### Goals", "", "| goal | measured | holds |", "| --- | --- | --- |"]
    for n in sizes:
        ours, node = cpu.get(("chatroom", n), {}).get("server"), cpu.get(("node", n), {}).get("server")
        if ours is not None and node:
            ok = ours <= node / 2
            lines.append(
                f"| ≤ half of Node's CPU per delivery at {n:,} clients | {fmt(ours, 1)} against {fmt(node, 1)} µs "
                f"({ours / node:.2f}) | {'yes' if ok else 'no'} |"
            )
    for n in sizes:
        ours = held.get(("chatroom", n), {}).get("deliveries")
        node = held.get(("node", n), {}).get("deliveries")
        if ours is not None and node is not None:
            ok = node > 0 and ours >= 2 * node or node == 0 and ours > 0
            lines.append(f"| ≥ 2x Node's deliveries/s at {n:,} clients | {ratio(ours, node)} | {'yes' if ok else 'no'} |")
    if latency.get("chatroom", {}).get("p99") is not None:
        p99 = latency["chatroom"]["p99"]
        lines.append(f"| p99 ≤ 5 ms at 1,000 clients, 10 msg/s | {fmt(p99, 2)} ms | {'yes' if p99 <= 5 else 'no'} |")
    if "chatroom" in memory:
        kib = memory["chatroom"]["kib"]
        lines.append(f"| ≤ 8 KiB per idle connection | {fmt(kib, 1)} KiB | {'yes' if kib <= 8 else 'no'} |")
    for name, what in (("1node", "one node up to its fd limit"), ("6nodes", "100,000 over several nodes")):
        c = capacity.get(name)
        if c:
            ok = c["failures"] == 0 and c["dropped_while_held"] == 0 and c["connected"] == c["asked"]
            lines.append(f"| {what}, zero failures | {c['connected']:,} held, {c['failures']} failed | {'yes' if ok else 'no'} |")

    # Charts.
    docs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(SYSTEMS)
    for i, (system, label) in enumerate(SYSTEMS):
        values = [held.get((system, n), {}).get("deliveries") or 0 for n in sizes]
        ax.bar([x + i * width for x in range(len(sizes))], values, width, label=label, color=COLOURS[system])
    ax.set_xticks([x + width for x in range(len(sizes))], [f"{n:,} clients" for n in sizes])
    ax.set_yscale("symlog", linthresh=1000)
    ax.set_ylabel("deliveries/s held")
    ax.set_title("Highest load held (p99 ≤ 250 ms, nothing lost), medians")
    save(fig, ax, docs / "bench-throughput.svg")

    fig, ax = plt.subplots(figsize=(7, 3))
    measured = [(system, label) for system, label in SYSTEMS if latency.get(system, {}).get("p50") is not None]
    names = [label for _, label in measured]
    keys = [system for system, _ in measured]
    ys = range(len(keys))
    ax.barh([y + 0.2 for y in ys], [latency[k]["p50"] for k in keys], 0.4, label="p50", color="#90cdf4")
    ax.barh([y - 0.2 for y in ys], [latency[k]["p99"] for k in keys], 0.4, label="p99", color="#2b6cb0")
    ax.set_yticks(list(ys), names)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_title("Latency at 1,000 clients, 10 msg/s (medians)")
    save(fig, ax, docs / "bench-latency.svg")

    lines += [
        "",
        "![Highest load held](bench-throughput.svg)",
        "",
        "![Latency at 1,000 clients](bench-latency.svg)",
        "",
        f"Raw reports (one JSON line per run) are in `{results.name}` under `target/bench/` of the machine that ran it.",
        "",
        END,
    ]
    page = docs / "benchmarks.md"
    text = page.read_text() if page.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + "\n".join(lines) + after
    else:
        text += "\n" + "\n".join(lines) + "\n"
    page.write_text(text)
    print(f"wrote {page}")


if __name__ == "__main__":
    main()
