"""The README's example runs (with its sizes shrunk)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    for big, small in (("1024", "6"), ("t1=1e3", "t1=1.0")):
        assert big in code, big
        code = code.replace(big, small)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    ens = namespace["ens"]
    assert len(ens) == 6
    assert (tmp_path / "ensemble.nc").exists() and (tmp_path / "curves.png").exists()
