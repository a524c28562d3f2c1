"""
Run the reliability suites (tests/reliability/) and print their figures.

By default the long variants run (KARAJO_RELIABILITY=long): 100 crash
rounds, 10,000 signed webhooks, 500 slow clients, 20 shutdowns, 10,000
examples per fuzz target and 1,000 schemathesis examples per API operation.
They take about 15 minutes on a 2-core machine.  --quick runs the CI
variants instead.  The suites start the installed daemon (the `twistd`
beside this interpreter), so install the checkout first:

    .venv/bin/pip install '.[test]'
    .venv/bin/python bench/reliability.py [--quick] [--seed N] [SUITE ...]

SUITE is one of crash, load, slow_clients, shutdown, fuzz, api_fuzz,
supply_chain (default: all).  Exit status is trial's: 0 when every suite
passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SUITES = {
    "crash": "tests.reliability.test_crash",
    "load": "tests.reliability.test_load",
    "slow_clients": "tests.reliability.test_slow_clients",
    "shutdown": "tests.reliability.test_shutdown",
    "fuzz": "tests.reliability.test_fuzz",
    "api_fuzz": "tests.reliability.test_api_fuzz",
    "supply_chain": "tests.reliability.test_supply_chain",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", choices=[[]] + list(SUITES), metavar="SUITE")
    parser.add_argument("--quick", action="store_true", help="the CI variants")
    parser.add_argument("--seed", help="seed of the crash rounds and schemathesis")
    args = parser.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report = tempfile.NamedTemporaryFile(prefix="karajo-reliability-", suffix=".jsonl", delete=False)
    report.close()
    env = dict(os.environ, KARAJO_RELIABILITY_REPORT=report.name)
    env["KARAJO_RELIABILITY"] = "quick" if args.quick else "long"
    if args.seed is not None:
        env["KARAJO_RELIABILITY_SEED"] = args.seed
    modules = [SUITES[s] for s in (args.suites or SUITES)]
    started = time.monotonic()
    status = subprocess.call(
        [sys.executable, "-m", "twisted.trial", "--temp-directory",
         os.path.join(tempfile.gettempdir(), "karajo-reliability-trial"), *modules],
        cwd=root, env=env,
    )
    elapsed = time.monotonic() - started

    print()
    print(f"karajo reliability, {env['KARAJO_RELIABILITY']} variants, {elapsed:.0f} s"
          f" ({os.cpu_count()} CPUs)")
    with open(report.name, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        suite = row.pop("suite")
        row.pop("variant", None)
        print(f"  {suite:13s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    os.unlink(report.name)
    print("trial: " + ("passed" if status == 0 else f"FAILED (exit status {status})"))
    return status


if __name__ == "__main__":
    sys.exit(main())
