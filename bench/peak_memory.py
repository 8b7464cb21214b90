#!/usr/bin/env python3
"""Peak memory of a command and all its child processes together (Linux).

    python bench/peak_memory.py -- .venv/bin/python 01_features.py configs/cnn_small.yaml configs/cnn8.yaml

Samples, every 0.1 s, the sum over the process tree of each process's proportional set size
(PSS from /proc/<pid>/smaps_rollup: shared pages such as the libraries that forked workers share
with their parent are split between them, so the sum is the tree's real footprint), and prints
the peak and the largest single process's resident set (RSS). Exits with the command's status.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = (task / "children")
            if children.exists():
                todo += [int(c) for c in children.read_text().split()]
    return out


def memory_kb(pid: int, field: str) -> int:
    """A ``smaps_rollup`` field (``Pss:``, ``Rss:``) of a process in kB; 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    proc = subprocess.Popen(args)
    peak_pss = peak_rss = 0
    t0 = time.time()
    while proc.poll() is None:
        pids = tree(proc.pid)
        peak_pss = max(peak_pss, sum(memory_kb(p, "Pss:") for p in pids))
        peak_rss = max(peak_rss, max(memory_kb(p, "Rss:") for p in pids))
        time.sleep(0.1)
    print(f"\npeak memory of the process tree (sum of PSS): {peak_pss / 1024 ** 2:.2f} GiB; "
          f"largest single process (RSS): {peak_rss / 1024 ** 2:.2f} GiB; {time.time() - t0:.1f} s")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
