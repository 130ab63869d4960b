"""The README stays true: every lib3d name in its porting table exists, and its commands match CI."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def porting_rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Porting table", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [r.split(" | ")[-1] for r in rows[1:]]  # the lib3d column


def resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_porting_table_names_exist():
    rows = porting_rows()
    assert len(rows) > 30
    checked = 0
    for cell in rows:
        for code in re.findall(r"`([^`]+)`", cell):
            m = re.match(r"from (lib3d[\w.]*) import (.+)", code)
            if m:
                mod = importlib.import_module(m.group(1))
                for name in re.split(r",\s*", m.group(2)):
                    assert hasattr(mod, name.strip()), f"README names {m.group(1)}.{name} which does not exist"
                    checked += 1
                continue
            for dotted in re.findall(r"\b(lib3d(?:\.\w+)+)", code):
                # "lib3d.x.a / b / c" lists siblings of a
                resolve(dotted)
                checked += 1
                base = dotted.rsplit(".", 1)[0]
                rest = code.split(dotted, 1)[1]
                if not rest.startswith(" /"):  # "lib3d.x.f(...)" or "X().method": no sibling list
                    continue
                for sib in re.findall(r"/\s*(\w+)", rest):
                    assert hasattr(resolve(base), sib), f"README names {base}.{sib} which does not exist"
                    checked += 1
    assert checked > 50


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = ".venv/bin/python -m pytest"
    setup = 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev]"'
    assert test_cmd in readme and setup in readme
    assert ci.strip().splitlines()[-1] == test_cmd
    assert 'pip install -q torch==2.13.0 -e ".[dev]"' in ci
