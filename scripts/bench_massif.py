"""Splits a node's heap growth per idle connection by who allocated it, from two
detailed massif snapshots of the node (vgdb `detailed_snapshot`): one before the
connections were opened and one while they were held (scripts/bench.sh takes both).

Each allocation's stack is read from the allocation outward; its owner is the first
frame that is not plumbing (the standard library, tokio, hashbrown, bytes, …), and its
kind says what the plumbing was: a spawned task's future, a channel's block, or plain
heap. Used by scripts/bench_report.py; run alone to print the table:

    python scripts/bench_massif.py BEFORE AFTER CONNECTIONS
"""

import re
import sys
from collections import defaultdict

ENTRY = re.compile(r"^( *)n(\d+): (\d+) (.*)$")
# Frames that allocate on someone else's behalf.
PLUMBING = (
    "alloc", "core", "std", "tokio", "hashbrown", "bytes", "futures_util", "futures_core",
    "smallvec", "indexmap", "parking_lot", "lock_api", "serde", "serde_json", "__rustc",
    "__rust_alloc", "__rdl_alloc", "malloc", "calloc", "realloc", "operator", "???",
    "pin_project_lite", "tracing", "tower", "http_body_util", "dashmap", "arc_swap",
)
# Whose code a crate is, for the totals.
WHOSE = {
    "server": "chatroom", "app": "chatroom",
    "socketioxide": "socketioxide", "socketioxide_core": "socketioxide",
    "socketioxide_parser_common": "socketioxide", "engineioxide": "engineioxide",
    "engineioxide_core": "engineioxide", "hyper": "hyper", "hyper_util": "hyper",
    "tungstenite": "tungstenite", "tokio_tungstenite": "tungstenite", "axum": "axum",
    "http": "hyper",
}


def function_of(desc: str) -> str:
    """The function a massif frame names, without its address, file and hash."""
    name = desc.split(": ", 1)[1] if re.match(r"^0x[0-9A-F]+: ", desc) else desc
    name = re.sub(r" \((in |[^()]*:\d+\)).*$", "", name)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return name


def crate_of(function: str) -> str:
    """The crate a function belongs to; for `<T as Trait>::f`, T's crate."""
    path = function.lstrip("<&* ")
    path = re.sub(r"^(mut |dyn |impl )", "", path)
    return re.split(r"::|<| |\(", path, maxsplit=1)[0] or "???"


def short(function: str) -> str:
    """A function's name without generic arguments or closure markers; `<T as Trait>::f`
    becomes `T::f`."""
    name = function
    while re.search(r"(\w)<[^<>]*>", name):
        name = re.sub(r"(\w)<[^<>]*>", r"\1", name)
    name = re.sub(r"^<([^<>]+?) as [^<>]+>", r"\1", name)
    return name.replace("::{{closure}}", "").replace("{{closure}}", "")


def leaves(path):
    """(bytes, frames from the allocation outward) of every leaf in a detailed snapshot."""
    stack = []
    with open(path) as snapshot:
        for line in snapshot:
            m = ENTRY.match(line.rstrip("\n"))
            if not m:
                continue
            depth, children, size, desc = len(m[1]), int(m[2]), int(m[3]), m[4]
            del stack[depth:]
            stack.append(desc)
            if children == 0 and depth > 0:
                yield size, stack[1:]


def classify(frames):
    """(owner, kind) of one allocation stack."""
    functions = [function_of(f) for f in frames if "below massif's threshold" not in f]
    for at, function in enumerate(functions):
        if crate_of(function) not in PLUMBING:
            # What the plumbing between the allocation and its owner was: every allocation
            # of a task runs under tokio's task frames, so only these frames say it.
            plumbing = " ".join(functions[:at])
            if re.search(r"tokio::runtime::task::(core|raw|new_task)|tokio::task::spawn|JoinSet.*spawn", plumbing):
                kind = "task future"
            elif re.search(r"tokio::sync::(mpsc|broadcast|watch|oneshot)", plumbing):
                kind = "channel"
            else:
                kind = "heap"
            return short(function), kind
    below = any("below massif's threshold" in f for f in frames)
    return ("(small allocations, below massif's threshold)" if below else "(runtime)"), "heap"


def totals(path):
    by_owner = defaultdict(int)
    for size, frames in leaves(path):
        by_owner[classify(frames)] += size
    return by_owner


def breakdown(before_path, after_path, connections):
    """Rows (owner, kind, whose, bytes per connection), largest first."""
    before, after = totals(before_path), totals(after_path)
    rows = []
    for key in set(before) | set(after):
        grown = (after.get(key, 0) - before.get(key, 0)) / connections
        owner, kind = key
        rows.append((owner, kind, WHOSE.get(crate_of(owner), "other"), grown))
    rows.sort(key=lambda row: -row[3])
    return rows


def table(rows, smallest=48):
    """Markdown lines: every row of at least `smallest` bytes a connection, the rest summed,
    then the totals by whose code it is."""
    lines = ["| allocated by | as | whose | bytes per connection |", "| --- | --- | --- | ---: |"]
    rest = 0.0
    for owner, kind, whose, grown in rows:
        if grown >= smallest:
            lines.append(f"| `{owner}` | {kind} | {whose} | {grown:,.0f} |")
        else:
            rest += grown
    lines.append(f"| everything else (each under {smallest} B) | | | {rest:,.0f} |")
    whose_total = defaultdict(float)
    for _, _, whose, grown in rows:
        whose_total[whose] += grown
    total = sum(whose_total.values())
    lines.append(f"| **heap growth in all** | | | **{total:,.0f}** |")
    lines += ["", "By whose code: " + ", ".join(
        f"{whose} {grown:,.0f} B" for whose, grown in sorted(whose_total.items(), key=lambda kv: -kv[1])
    ) + "."]
    return lines


if __name__ == "__main__":
    print("\n".join(table(breakdown(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
