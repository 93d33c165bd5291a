"""Compare two results folders file by file: which outputs are byte-identical, which differ only in
what is expected to differ between runs (JSON keys that hold times, a PDF's CreationDate), and
which differ in content. Used to check that a change of code leaves a run's outputs unchanged.

    python benchmarks/compare_runs.py RESULTS_BEFORE RESULTS_AFTER

Logs and Snakemake benchmark files are skipped. Exit status 1 when a file differs in content or
exists in one folder only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SKIPPED = ("logs", "benchmarks")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in SKIPPED}


def _without_times(node):
    if isinstance(node, dict):
        return {k: _without_times(v) for k, v in node.items() if "time" not in k}
    if isinstance(node, list):
        return [_without_times(v) for v in node]
    return node


def _same_but_expected(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return _without_times(json.loads(a.read_text())) == _without_times(json.loads(b.read_text()))
    if a.suffix == ".pdf":
        date = re.compile(rb"/CreationDate \([^)]*\)")
        return date.sub(b"", a.read_bytes()) == date.sub(b"", b.read_bytes())
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = _files(args.before), _files(args.after)
    identical, expected, different = [], [], []
    for name in sorted(before & after):
        a, b = args.before / name, args.after / name
        if a.read_bytes() == b.read_bytes():
            identical.append(name)
        elif _same_but_expected(a, b):
            expected.append(name)
        else:
            different.append(name)
    print(f"{len(identical)} byte-identical, {len(expected)} differing only in times or PDF dates, "
          f"{len(different)} differing in content, {len(before - after)} only before, {len(after - before)} only after")
    for title, names in (("differ in content", different), ("only before", sorted(before - after)),
                         ("only after", sorted(after - before))):
        for name in names:
            print(f"  {title}: {name}")
    return 1 if different or before != after else 0


if __name__ == "__main__":
    sys.exit(main())
