"""The README documents the settings exactly as pipeline/settings.py defines them."""

from pathlib import Path

from pipeline.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_the_generated_one():
    assert settings_table_markdown() in README.read_text()
