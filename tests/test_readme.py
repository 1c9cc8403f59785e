"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


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
