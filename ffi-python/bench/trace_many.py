"""Throughput of `Cluster.trace_many` against the same flows traced natively.

Runs the flow mix of `benches/src/lib.rs` (TRACE_MANY_FLOWS) through the binding in batches,
then the `figures` binary's `trace_many_native` figure, and prints both medians and their
ratio. Usage: python ffi-python/bench/trace_many.py [--seconds S] [--figures PATH] [--smoke]

Build the module with `maturin develop --release` first: a debug build measures the debug
build. `--smoke` (used by the test script) only checks that the bench runs.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import podnet

FLOWS = [
    ("pod/default/pod2", "10.96.0.10:80", "udp"),
    ("pod/default/pod2", "10.96.0.10:80", "tcp"),
    ("pod/default/pod1", "10.244.1.3:8080", "udp"),
    ("pod/default/pod1", "10.244.2.2:8080", "tcp"),
]


def python_rate(seconds: float) -> float:
    c = podnet.Cluster.seed()
    batch = FLOWS * 50
    c.trace_many(batch)
    rates = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t = time.perf_counter()
        out = c.trace_many(batch)
        rates.append(len(batch) / (time.perf_counter() - t))
        assert all(s.completed for s in out), out[:4]
        # One virtual second per batch (about 200 flows/s per client, as the native side
        # runs it): finished connections leave TIME_WAIT instead of using up every port.
        c.advance(1.0)
    return statistics.median(rates)


def native_rate(figures: str, seconds: float) -> float:
    out = subprocess.run(
        [figures, "--trace-many", "--json", "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        f = json.loads(line)
        if f["name"] == "trace_many_native":
            return float(f["median"])
    raise SystemExit(f"{figures} printed no trace_many_native figure:\n{out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--figures", default="target/release/figures")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    py = python_rate(a.seconds)
    native = native_rate(a.figures, a.seconds)
    print(f"trace_many via Python   {py:>10.0f} flow/s (median)")
    print(f"same flows, native Rust {native:>10.0f} flow/s (median)")
    print(f"ratio                   {py / native:>10.2f} (target >= 0.5)")
    if a.smoke:
        print("smoke run (module and figures may be built differently): the figures mean nothing")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
