"""A deterministic guard on the request path's cost: Python opcodes per request, from bench_hotpath.py.

CPU time on a shared machine moves by tens of percent between runs; the number of bytecode instructions the
event loop's thread executes for the median request, in the request's own tasks (background tasks and the
loop's bookkeeping left out), does not move, however busy the machine is. So each subject's count must
stay within its budget, and not fall far below it either: a gain lowers the budget in the same commit, so
that later changes cannot erode it unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Opcodes of the median request of `bench_hotpath.py --child SUBJECT` (`--traced 200`), 3 % headroom:
# measured 6202 and 6724 (the bare handler: 3821); then 7040 for `default` once every execution also records
# its payload and step outputs for the admin page (issue 13: the detail is encoded when the execution is
# added to the recorder, on the request's task).
# `default` is the shipped configuration (JSON access log at info, recording to SQLite); `stripped` has
# neither. Measured on Python 3.11; another minor version executes other bytecode.
BUDGET = {"stripped": 6400, "default": 7250}


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the budgets are Python 3.11's bytecode")
@pytest.mark.parametrize("subject", sorted(BUDGET))
def test_opcodes_per_request_stay_within_the_budget(subject: str) -> None:
    done = subprocess.run(
        [sys.executable, "tests/bench/bench_hotpath.py", "--child", subject, "--requests", "50", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    opcodes = json.loads(done.stdout.splitlines()[-1])["opcodes"]
    budget = BUDGET[subject]
    assert opcodes <= budget, f"{subject}: {opcodes:.0f} opcodes per request, over the budget of {budget}"
    assert opcodes >= budget * 0.9, f"{subject}: {opcodes:.0f} opcodes per request: lower its budget ({budget})"
