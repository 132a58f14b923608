#!/usr/bin/env python3
"""Prints the closing line 'N passed, N failed, N skipped' for scripts/test.

Counts doctest test cases from each meson test's output (its summary line), so the
numbers are test cases, not executables. A test executable that crashed, timed out or
printed no summary counts as one failed test. Each --result NAME=STATUS (the format
check, the fuzzer) counts as one test, passed when STATUS is 0. Exits 1 when anything
failed.
"""
import argparse
import json
import re

SUMMARY = re.compile(
    r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed \|\s*(\d+) skipped")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--result", action="append", default=[])
    args = parser.parse_args()
    passed = failed = skipped = 0
    failures = []
    for result in args.result:
        name, _, status = result.rpartition("=")
        if status == "0":
            passed += 1
        else:
            failed += 1
            failures.append(name)
    try:
        with open(args.log, encoding="utf-8") as log:
            entries = [json.loads(line) for line in log if line.strip()]
    except FileNotFoundError:
        entries = []
        failed += 1
        failures.append("meson test (no test log)")
    for entry in entries:
        name, result = entry["name"], entry["result"]
        summaries = SUMMARY.findall(entry.get("stdout", "") or "")
        if result == "SKIP":
            skipped += 1
            continue
        if summaries:
            _, ok, bad, skip = (int(x) for x in summaries[-1])
            passed += ok
            failed += bad
            skipped += skip
            if result not in ("OK", "EXPECTEDFAIL") and bad == 0:
                failed += 1  # exited non-zero although every case passed
            if result not in ("OK", "EXPECTEDFAIL"):
                failures.append(f"{name} ({result})")
        elif result == "OK":
            passed += 1  # a test that is not a doctest executable
        else:
            failed += 1
            failures.append(f"{name} ({result})")
    if failures:
        print("failed: " + ", ".join(failures))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
