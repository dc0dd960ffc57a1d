"""The README's Polars round trip, run exactly as written against a local service (only its address changed)."""

import re
import textwrap

from conftest import REPO


def snippet():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- polars:start -->\s*```python\n(.*?)```\s*<!-- polars:end -->", readme, re.S)
    assert block, "the README has no Polars block between <!-- polars:start --> and <!-- polars:end -->"
    return textwrap.dedent(block.group(1))


def test_the_readme_polars_round_trip_runs_as_written(proto, start, tmp_path, capsys):
    root = tmp_path / "results"
    service = start(f'[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = "{root}"\n')
    code = snippet()
    assert '"127.0.0.1:50051"' in code
    # The stubs are importable as the README generates them (the proto fixture put them on the path).
    exec(compile(code.replace('"127.0.0.1:50051"', f'"{service.address}"'), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Lyon" in printed and "31.2" in printed, printed
    assert any(path.name == "part-0.parquet" for path in root.rglob("*")), "the worker wrote into the sink"
