"""Medians of a benches/run.sh results file, as a Markdown table.

Usage: python3 benches/summarize.py target/bench/results-STAMP.tsv

Rows are grouped by pair, record count, tool and concurrency; records/s, peak RSS and
CPU seconds are the medians over the runs. vismig's rows are compared with the pair's
first anchor (the rows whose concurrency is "-") and with the fastest anchor of the same
kind: a bulk load (vismig's deferIndexes/deferRefresh) with the anchors that also build
indexes or refresh after the data (pgcopydb, "+ CREATE INDEX", "refresh off"), a plain
copy with the others.
"""

import csv
import statistics
import sys


def is_bulk_anchor(name):
    """An anchor that loads the data first and builds the indexes after it."""
    return "CREATE INDEX" in name or name.startswith("pgcopydb") or "refresh off" in name


def main(path):
    groups = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["pair"], int(row["records"]), row["tool"], row["concurrency"])
            g = groups.setdefault(key, {"rate": [], "rss": [], "cpu": []})
            g["rate"].append(int(row["records"]) / float(row["seconds"]))
            g["rss"].append(int(row["rss_kib"]) / 1024)
            g["cpu"].append(float(row["cpu_seconds"]))
    medians = {k: {m: statistics.median(v) for m, v in g.items()} | {"runs": len(g["rate"])} for k, g in groups.items()}
    anchors = {}
    for (pair, n, tool, c), m in medians.items():
        if c == "-":
            anchors.setdefault((pair, n), []).append((tool, m["rate"]))

    def versus(pair, n, tool, rate):
        known = anchors.get((pair, n), [])
        if not known:
            return "-"
        first_name, first_rate = known[0]
        text = f"{rate / first_rate:.2f}x {first_name.split(' (')[0]}"
        bulk = "defer" in tool
        same_kind = [(name, r) for name, r in known if is_bulk_anchor(name) == bulk] or known
        best_name, best_rate = max(same_kind, key=lambda a: a[1])
        if best_name != first_name:
            text += f"; {rate / best_rate:.2f}x best ({best_name})"
        return text

    print("| pair | records | tool | concurrency | records/s | vs anchor | peak RSS MiB | CPU s | runs |")
    print("| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for (pair, n, tool, c), m in medians.items():
        if c == "-":
            ratio = "anchor"
            # A server-side anchor's client process says nothing about its memory.
            rss = "server" if tool.startswith("_reindex") else f"{m['rss']:.0f}"
        else:
            ratio = versus(pair, n, tool, m["rate"])
            rss = f"{m['rss']:.0f}"
        print(f"| {pair} | {n:,} | {tool} | {c} | {m['rate']:,.0f} | {ratio} | {rss} | {m['cpu']:.1f} | {m['runs']} |")


if __name__ == "__main__":
    main(sys.argv[1])
