"""The data guide's Python snippets run as written, in order."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "data.rst"


def _blocks():
    text = PAGE.read_text()
    blocks = re.findall(
        r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text, flags=re.M
    )
    return ["\n".join(line[3:] for line in block.splitlines()) for block in blocks]


def test_data_guide_snippets_run(capsys, tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) == 8
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "uint8 110"
    assert lines[1] == "60 (250,)"
    assert lines[2] == "True"  # a learner fitted on an ImageFolder pickles
    assert lines[3] == "[1 0]"
    assert len(lines[4].strip("[]").split()) == 3
    assert len(lines[5].strip("[]").split()) == 5
    assert lines[6] == "True 35"
    assert lines[7] == "(1, 8, 8) 50 (10,)"
