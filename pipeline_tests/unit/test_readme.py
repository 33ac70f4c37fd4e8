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
