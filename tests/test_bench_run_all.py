"""`make bench` regenerates the README's tables: the table extraction and the block
replacement (the benchmarks themselves are run at tiny sizes by their own tests)."""

import pytest

from benchmarks import run_all


def test_markdown_tables_keeps_tables_and_machine_lines_only():
    text = (
        "compiling...\nMachine: x86_64 2 cores\n\n| a | b |\n|---|---|\n| 1 | 2 |\nnoise\n| c |\n"
    )
    assert run_all.markdown_tables(text) == (
        "Machine: x86_64 2 cores\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| c |"
    )
    assert run_all.markdown_tables("no tables here\n") == ""


def test_replace_block_touches_only_its_block():
    readme = (
        "intro\n<!-- make bench: peers -->\nold peers\n<!-- /make bench: peers -->\n"
        "text\n<!-- make bench: cost_growth -->\nold cost\n<!-- /make bench: cost_growth -->\n"
    )
    new = run_all.replace_block(readme, "peers", "| new |")
    assert new == readme.replace("old peers", "| new |")
    with pytest.raises(KeyError, match="limit_labelling"):
        run_all.replace_block(readme, "limit_labelling", "x")


def test_every_benchmark_has_a_readme_block():
    readme = run_all.README.read_text()
    for name in run_all.BENCHMARKS:
        assert f"<!-- make bench: {name} -->" in readme, name
        assert f"<!-- /make bench: {name} -->" in readme, name
