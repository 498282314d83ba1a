"""Medians of a benches/run.sh results file, as a Markdown table.

Usage: python3 benches/summarize.py target/bench/results-STAMP.tsv

Rows are grouped by pair, record count, tool and concurrency; records/s, peak RSS and
CPU seconds are the medians over the runs. vismig's rows are compared with each anchor
of the same pair and size (the rows whose concurrency is "-").
"""

import csv
import statistics
import sys


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

    print("| pair | records | tool | concurrency | records/s | vs anchor | peak RSS MiB | CPU s | runs |")
    print("| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for (pair, n, tool, c), m in medians.items():
        if c == "-":
            versus = "anchor"
            # A server-side anchor's client process says nothing about its memory.
            rss = "server" if tool.startswith("_reindex") else f"{m['rss']:.0f}"
        else:
            versus = ", ".join(f"{m['rate'] / rate:.2f}x {name.split(' (')[0]}" for name, rate in anchors.get((pair, n), []))
            rss = f"{m['rss']:.0f}"
        print(f"| {pair} | {n:,} | {tool} | {c} | {m['rate']:,.0f} | {versus or '-'} | {rss} | {m['cpu']:.1f} | {m['runs']} |")


if __name__ == "__main__":
    main(sys.argv[1])
