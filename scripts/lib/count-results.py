#!/usr/bin/env python3
"""Prints the closing line 'N passed, N failed, N skipped' for scripts/test.

Counts doctest test cases from each meson test's output (its summary line), so the
numbers are test cases, not executables. A test executable that crashed, timed out or
printed no summary counts as one failed test. The format check counts as one test.
Exits 1 when anything failed.
"""
import json
import re
import sys

SUMMARY = re.compile(
    r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed \|\s*(\d+) skipped")


def main() -> int:
    log_path, format_status = sys.argv[1], int(sys.argv[2])
    passed = failed = skipped = 0
    if format_status == 0:
        passed += 1
    else:
        failed += 1
    failures = [] if format_status == 0 else ["format check"]
    try:
        with open(log_path, encoding="utf-8") as log:
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
    sys.exit(main())
