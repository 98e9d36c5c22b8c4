"""The README's Python snippet runs and prints what it says."""
import os
import re

import numpy as np
import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


@pytest.mark.skipif(not os.path.exists(README), reason="README.md not next to the tests")
def test_readme_snippet(capsys):
    text = open(README).read()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(2, 8, 64) [[10, 10], [6, 6]]"
    assert np.isfinite(float(lines[1]))
