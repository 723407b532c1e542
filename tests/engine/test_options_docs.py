"""docs/engine.md has one table of options per method and per task with options, equal to the dataclasses."""

from __future__ import annotations

import re
from pathlib import Path

from napari_brgm.engine.methods import METHOD_SPECS
from napari_brgm.engine.options import OptionInfo, describe
from napari_brgm.engine.tasks import TASK_SPECS

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"
HEADING = re.compile(r"^### (method|task) `(\w+)`")


def _row(info: OptionInfo) -> str:
    kind = info.type.__name__ + (" or None" if info.optional else "")
    default = repr(info.default) if isinstance(info.default, str) else info.default_text
    meaning = info.help.replace("|", "\\|")
    return f"| `{info.name}` | {kind} | `{default}` | {info.allowed_text} | {meaning} |"


def _table(cls) -> list[str]:
    return ["| option | type | default | allowed | meaning |", "|---|---|---|---|---|", *map(_row, describe(cls))]


def _documented() -> dict[tuple[str, str], list[str]]:
    """(kind, name) → the table lines under its '### method `name`' heading."""
    tables, key = {}, None
    for line in DOC.read_text().splitlines():
        if match := HEADING.match(line):
            key = match.groups()
            tables[key] = []
        elif line.startswith("#"):
            key = None
        elif key is not None and line.startswith("|"):
            tables[key].append(line)
    return tables


def test_every_method_and_task_with_options_has_its_table_in_engine_md():
    documented = _documented()
    expected = {("method", name): _table(spec.options) for name, spec in METHOD_SPECS.items()}
    expected |= {("task", name): _table(spec.options) for name, spec in TASK_SPECS.items() if describe(spec.options)}
    assert set(documented) == set(expected)
    for key, table in expected.items():
        assert documented[key] == table, f"docs/engine.md, {' '.join(key)}: expected\n" + "\n".join(table)
