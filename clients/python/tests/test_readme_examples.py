"""Every Python example in README.md runs against a real sidecar, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
EXAMPLES = re.findall(r"```python\n(.*?)```", (PACKAGE / "README.md").read_text(), re.DOTALL)


def run(code: str, address: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COHERENCE_ADDR=address, PYTHONPATH=str(PACKAGE / "src"))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_readme_has_the_examples():
    assert len(EXAMPLES) == 3


def test_the_five_line_app_runs(sidecar_a):
    done = run(EXAMPLES[0], sidecar_a)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["{'id': 42, 'name': 'teapot'}"] * 2 + ["bumped"], done.stdout
    assert "hits=1" in lines[3] and "loads=1" in lines[3], lines[3]


def test_the_jobs_example_runs(sidecar_a):
    done = run(EXAMPLES[1], sidecar_a)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"writing the report under fencing token \d+\n", done.stdout), done.stdout


def test_the_mirror_example_runs_and_answers_locally(sidecar_a):
    done = run(EXAMPLES[2], sidecar_a)
    assert done.returncode == 0, done.stderr
    kettle = "{'id': 7, 'name': 'kettle'}"
    assert done.stdout.splitlines() == ["trusted: True", kettle, kettle, "answered locally: True"]


def test_without_a_sidecar_the_mirror_example_answers_from_the_database_only():
    done = run(EXAMPLES[2], "127.0.0.1:1")
    assert done.returncode == 0, done.stderr
    kettle = "{'id': 7, 'name': 'kettle'}"
    assert done.stdout.splitlines() == ["trusted: False", kettle, kettle, "answered locally: False"]


def test_without_a_sidecar_the_app_still_answers_but_caches_nothing():
    done = run(EXAMPLES[0], "127.0.0.1:1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["{'id': 42, 'name': 'teapot'}"] * 2 + ["NOT bumped: ['item:42']"]
    assert "loads=0" in lines[3] and "uncached_loads=2" in lines[3], lines[3]


def test_without_a_sidecar_the_jobs_example_fails_naming_the_address():
    done = run(EXAMPLES[1], "127.0.0.1:1")
    assert done.returncode != 0
    assert "Unavailable" in done.stderr and "127.0.0.1:1" in done.stderr, done.stderr
