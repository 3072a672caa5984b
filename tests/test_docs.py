"""The docs: every setting and every `forecourt` command is mentioned, the settings table is current, links resolve,
and the README stays a short front page."""

from __future__ import annotations

import importlib.util
import re

import click

from server.cli import cli
from server.config import iter_settings
from tests.helpers import REPO

DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]


def _text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        out += _commands(command, path) if isinstance(command, click.Group) else [path]
    return out


def test_every_setting_is_in_the_docs() -> None:
    text = _text()
    missing = [name for name, _, _ in iter_settings() if f"`{name}`" not in text]
    assert not missing, f"settings the docs never mention: {missing}"


def test_every_command_is_in_the_docs() -> None:
    """Each command appears as `forecourt GROUP ...` on a line that also names the subcommand."""
    lines = _text().splitlines()
    missing = []
    for path in _commands(cli):
        head = f"forecourt {path[0]}"
        if not any(head in line and (len(path) == 1 or re.search(rf"\b{re.escape(path[-1])}\b", line))
                   for line in lines):
            missing.append(" ".join(path))
    assert not missing, f"commands the docs never mention: {missing}"


def test_settings_table_matches_the_config() -> None:
    spec = importlib.util.spec_from_file_location("gen_config_example", REPO / "scripts" / "gen_config_example.py")
    gen_config_example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_config_example)
    docs = (REPO / "docs" / "configuration.md").read_text()
    assert gen_config_example.render_docs(docs) == docs, "run scripts/gen_config_example.py"
    assert gen_config_example.render() == (REPO / "config.example.toml").read_text()


def test_every_setting_has_a_one_line_help() -> None:
    long = [name for name, _, help_text in iter_settings() if len(help_text) > 110 or "\n" in help_text]
    assert not long, f"help longer than one line (move the reasoning to docs/configuration.md): {long}"


def test_relative_links_resolve() -> None:
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_readme_is_a_front_page() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
