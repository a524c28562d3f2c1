"""
The benchmarks' current figures next to the last recorded ones.

Runs C{webhook_runs.py}, C{http_load.py --only 1,2,3 --gzip},
C{run_throughput.py} and C{timer_lateness.py --jobs 200} (or reads the
figures of an earlier run with C{--from}), then prints each figure, the
one recorded in C{bench/recorded.json}, the change and the target.  A
change for the worse beyond C{--tolerance} (default 15 %: figures of one
script vary by 10-30 % from hour to hour on a shared 2-core machine) is
marked C{WORSE}; prefer the CPU-time rows, which vary least.

    python bench/compare.py [--only webhook,http,throughput,timer] [--from FILE]
                            [--save FILE] [--record]

C{--record} stores the figures as the new recorded ones (with the date,
the commit and the load average), for the next comparison.  Every script
runs with the interpreter running this one; C{--flock} takes
C{/tmp/bench.lock} around each, so two benchmarks never share the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORDED = os.path.join(HERE, "recorded.json")

#: name -> (unit, True when higher is better, target or None)
FIGURES: dict[str, tuple[str, bool, str | None]] = {
    "webhook.cpu_ms_per_run": ("ms", False, "<= 1.2"),
    "webhook.runs_per_s": ("/s", True, ">= 600"),
    "webhook.start_p50_ms": ("ms", False, "<= 1.8"),
    "webhook.start_p99_ms": ("ms", False, "<= 3"),
    "http.signed_rps": ("/s", True, ">= 7000"),
    "http.signed_cpu_ms": ("ms", False, None),
    "http.forged_rps": ("/s", True, ">= 12000"),
    "http.forged_cpu_ms": ("ms", False, None),
    "http.env_rps8": ("/s", True, ">= 800"),
    "http.env_cpu_ms": ("ms", False, None),
    "http.env_bytes": ("B", False, None),
    "http.env_gzip_bytes": ("B", False, None),
    "throughput.runs_per_s": ("/s", True, ">= 400"),
    "throughput.cpu_ms_per_run": ("ms", False, "< 1.5"),
    "timer.fire_p99_ms": ("ms", False, None),
    "timer.start_p99_ms": ("ms", False, "<= 250"),
}


def run(argv: list[str], flock: bool) -> str:
    cmd = [sys.executable, *argv]
    if flock:
        cmd = ["flock", "/tmp/bench.lock", *cmd]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def run_json(tmp: str, script: str, args: list[str], flock: bool) -> dict:
    """Run a script that writes its figures with C{--json FILE}; those figures."""
    out = os.path.join(tmp, script + ".json")
    run([os.path.join(HERE, script), *args, "--json", out], flock)
    with open(out) as f:
        return json.load(f)


def measure(only: set[str], flock: bool) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="karajo-compare-") as tmp:
        if "webhook" in only:
            w = run_json(tmp, "webhook_runs.py", [], flock)
            figures["webhook.cpu_ms_per_run"] = w["throughput"]["cpu_ms_per_run"]
            figures["webhook.runs_per_s"] = w["throughput"]["runs_per_s"]
            figures["webhook.start_p50_ms"] = w["latency"]["p50_ms"]
            figures["webhook.start_p99_ms"] = w["latency"]["p99_ms"]
        if "http" in only:
            h = run_json(tmp, "http_load.py", ["--only", "1,2,3", "--gzip", "--no-profile"], flock)
            figures["http.signed_rps"] = h["signed"]["rps"]
            figures["http.signed_cpu_ms"] = h["signed"]["cpu_ms_per_req"]
            figures["http.forged_rps"] = h["forged"]["rps"]
            figures["http.forged_cpu_ms"] = h["forged"]["cpu_ms_per_req"]
            figures["http.env_rps8"] = h["environment"]["rps8"]
            figures["http.env_cpu_ms"] = h["environment"]["cpu_ms_per_req8"]
            figures["http.env_bytes"] = h["environment"]["bytes"]
            figures["http.env_gzip_bytes"] = h["environment"]["gzip_bytes"]
        if "throughput" in only:
            text = run([os.path.join(HERE, "run_throughput.py")], flock)
            figures.update(parse_throughput(text))
        if "timer" in only:
            text = run([os.path.join(HERE, "timer_lateness.py"), "--jobs", "200"], flock)
            figures.update(parse_timer(text))
    return figures


def parse_throughput(text: str) -> dict[str, float]:
    """The figures of C{run_throughput.py}'s closing lines (any version of it)."""
    rps = re.search(r"runs/s: \w+ \((\d+)/s\)", text)
    cpu = re.search(r"daemon CPU/run: \w+ \(([\d.]+) ms\)", text)
    if rps is None or cpu is None:
        raise SystemExit("run_throughput.py printed no figures:\n" + text)
    return {"throughput.runs_per_s": float(rps.group(1)),
            "throughput.cpu_ms_per_run": float(cpu.group(1))}


def parse_timer(text: str) -> dict[str, float]:
    """The p99s of C{timer_lateness.py}: slot -> timer fire, slot -> the run's start."""
    start = re.search(r"slot -> callable p99 = ([\d.]+) ms", text)
    fire = re.search(r"^all slots\s+\d+\s+[\d.]+\s+([\d.]+)", text, re.M)
    if start is None:
        raise SystemExit("timer_lateness.py printed no figures:\n" + text)
    figures = {"timer.start_p99_ms": float(start.group(1))}
    if fire is not None:
        figures["timer.fire_p99_ms"] = float(fire.group(1))
    return figures


def show(current: dict[str, float], recorded: dict, tolerance: float) -> None:
    then = recorded.get("figures", {})
    print(f"recorded: {recorded.get('date', '-')} at {recorded.get('commit', '-')} "
          f"(load average {recorded.get('load_average', '-')})")
    rows = []
    for name, (unit, higher, target) in FIGURES.items():
        now = current.get(name)
        old = then.get(name)
        if now is None and old is None:
            continue
        change = verdict = ""
        if now is not None and old:
            delta = (now - old) / old
            change = f"{100 * delta:+.0f}%"
            worse = -delta if higher else delta
            verdict = "WORSE" if worse > tolerance else ("better" if worse < -tolerance else "")
        rows.append((name, fmt(now, unit), fmt(old, unit), change, target or "", verdict))
    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(len(HEAD))]
    for row in [HEAD, tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


HEAD = ("figure", "now", "recorded", "change", "target", "")


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.0f}{unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="webhook,http,throughput,timer")
    p.add_argument("--from", dest="source", default=None,
                   help="figures saved by --save instead of running the benchmarks")
    p.add_argument("--save", default=None, help="save the current figures here")
    p.add_argument("--record", action="store_true", help="store them as the recorded ones")
    p.add_argument("--tolerance", type=float, default=0.15)
    p.add_argument("--flock", action="store_true", help="flock /tmp/bench.lock around each")
    args = p.parse_args(argv)
    source = None
    if args.source:
        with open(args.source) as f:
            source = json.load(f)
        current = source["figures"]
    else:
        current = measure(set(args.only.split(",")), args.flock)
    try:
        with open(RECORDED) as f:
            recorded = json.load(f)
    except FileNotFoundError:
        recorded = {}
    show(current, recorded, args.tolerance)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    entry = source or {  # figures read back keep when and where they were measured
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "load_average": load, "figures": current}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(entry, f, indent=1)
    if args.record:
        with open(RECORDED, "w") as f:
            json.dump(entry, f, indent=1)
            f.write("\n")
        print(f"recorded in {os.path.relpath(RECORDED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
