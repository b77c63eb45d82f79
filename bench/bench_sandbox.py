"""Code-execution throughput: bubblewrap vs the process sandbox of earlier versions, side by side.

Runs MBPP's 427 sanitized reference solutions against their own tests through the code-exec
grader, once per isolation, in the same process and with the same worker count, interleaved in
rounds so that machine load hits both alike. Also checks that both pass exactly the same programs
(a legitimate program must not fail only because of the stronger sandbox).

    python bench/bench_sandbox.py [--data ../shared/data] [--workers N] [--rounds R]

Last line: ``ratio=<new/old>`` (programs per second, bubblewrap over process; target >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.grading.code_exec import CodeExecGrader  # noqa: E402
from harness.grading.sandbox import capabilities  # noqa: E402


def mbpp_programs(data: Path) -> tuple[list[str], list[str]]:
    """Each reference solution as a fenced response, and its tests (imports + asserts) as gold."""
    problems = json.loads((data / "mbpp" / "sanitized-mbpp.json").read_text())
    responses = [f"```python\n{p['code']}\n```" for p in problems]
    golds = ["\n".join([*p["test_imports"], *p["test_list"]]) for p in problems]
    return responses, golds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    caps = capabilities()
    if caps.bubblewrap is None:
        sys.exit(f"bubblewrap cannot run here: {caps.bubblewrap_error}")
    responses, golds = mbpp_programs(args.data)
    graders = {"bubblewrap": CodeExecGrader(workers=args.workers), "process": CodeExecGrader(workers=args.workers, unsafe_sandbox=True)}
    seconds = dict.fromkeys(graders, 0.0)
    passed: dict[str, list[float | None]] = {}
    print(f"{len(responses)} MBPP reference solutions, {args.workers} workers, {args.rounds} rounds; {caps.bubblewrap}, pids cgroup: {caps.pids_cgroup or 'none'}")
    for r in range(args.rounds):
        for name, grader in (graders.items() if r % 2 == 0 else reversed(graders.items())):
            started = time.perf_counter()
            grades = grader.grade_batch(responses, golds)
            took = time.perf_counter() - started
            seconds[name] += took
            passed[name] = [g.score for g in grades]
            print(f"  round {r + 1} {name:>10}: {len(responses) / took:6.1f} programs/s, {sum(s == 1.0 for s in passed[name])} passed")
    rate = {name: args.rounds * len(responses) / s for name, s in seconds.items()}
    differ = [i for i, (a, b) in enumerate(zip(passed["bubblewrap"], passed["process"])) if a != b]
    print(f"bubblewrap {rate['bubblewrap']:.1f}/s, process {rate['process']:.1f}/s; both pass {sum(s == 1.0 for s in passed['process'])} of {len(responses)}; differ on {len(differ)}")
    for i in differ[:5]:
        print(f"  differs: problem #{i}: bubblewrap {passed['bubblewrap'][i]}, process {passed['process'][i]}")
    print(f"ratio={rate['bubblewrap'] / rate['process']:.3f}")


if __name__ == "__main__":
    main()
