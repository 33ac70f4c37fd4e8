"""The docs state the settings exactly as pipeline/settings.py defines them, and link up."""

import re
from pathlib import Path

from pipeline.settings import settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_settings_page_holds_the_generated_table():
    assert settings_table_markdown() in (ROOT / "docs" / "settings.md").read_text()


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken


def _layout_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Code layout\n", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def _layout() -> tuple[set[str], dict[str, str]]:
    """The README layout's entries (paths it lists) and, per folder, the text that describes it."""
    entries: set[str] = set()
    described: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    last = ""
    for line in _layout_block():
        indent = len(line) - len(line.lstrip())
        if indent >= 10:  # a description's continuation
            described[last] = described.get(last, "") + " " + line.strip()
            continue
        while parents and parents[-1][0] >= indent:
            parents.pop()
        folder = parents[-1][1] if parents else ""
        names = []
        for token in re.split(r"\s{2,}", line.strip()):
            if not re.fullmatch(r"[\w.]+(/|\.py)", token):
                break
            names.append(token)
        for name in names:
            entries.add(folder + name)
        last = folder + names[0]
        described[last] = line
        if names[0].endswith("/"):
            parents.append((indent, folder + names[0]))
    return entries, described


def test_the_readme_code_layout_matches_the_tree():
    entries, described = _layout()
    assert not [e for e in entries if not (ROOT / e).exists()], "the layout lists missing paths"
    package = ROOT / "pipeline"
    unlisted = []
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if not (path.is_dir() or path.suffix == ".py"):
            continue
        relative = path.relative_to(ROOT).as_posix() + ("/" if path.is_dir() else "")
        folder = path.parent.relative_to(ROOT).as_posix() + "/"
        if relative not in entries and not re.search(
            rf"\b{re.escape(path.name)}\b", described.get(folder, "")
        ):
            unlisted.append(relative)
    assert not unlisted, f"in the tree, not in the README's code layout: {unlisted}"
    # Each stage is one folder, and the folder holds its Dagster glue.
    for stage in ("ingest", "detect", "enrich", "publish"):
        assert f"pipeline/{stage}/assets.py" in entries
