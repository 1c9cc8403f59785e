"""The README's Python examples run as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_quick_start_runs(capsys):
    exec(compile(_blocks()[0], str(README), "exec"), {})
    n_labeled, accuracy = capsys.readouterr().out.split()
    assert int(n_labeled) == 150
    assert 0.5 < float(accuracy) <= 1.0


def test_readme_strategy_search_runs(capsys):
    exec(compile(_blocks()[1], str(README), "exec"), {})
    out = capsys.readouterr().out
    assert re.fullmatch(r"\{'learner__strategy': '(random|margin)'\}\n", out)


def test_demo_prints_the_same_table_twice_on_one_machine():
    """Two runs of a small demo, each in a fresh process, print byte-identical
    tables (the README's table is one machine's output of the full demo),
    in the README's layout."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    args = ["--seeds", "1", "--rounds", "1", "--max-epochs", "1"]
    outputs = [
        subprocess.run(
            [sys.executable, str(ROOT / "examples/plot_compare_digits.py"), *args],
            env=env,
            check=True,
            capture_output=True,
        ).stdout.decode()
        for _ in range(2)
    ]
    # the last line reports the CPU time the run took
    outputs = [out.rsplit("(", 1)[0] for out in outputs]
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()
    assert lines[0] == "Test accuracy on digits (SmallCNN), mean ± std over 1 seeds"
    readme_table = README.read_text().split("Test accuracy on digits (SmallCNN)")[1]
    assert lines[1] in readme_table.splitlines()  # the same header
    assert len(lines) == 3 + 2 + 2  # title, header, rule; 2 rows; rule, AULC
