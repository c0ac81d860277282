"""The manual: the README stays a short front door, every docs page is reachable from it, the spec
reference is the schema's, and `mkdocs build --strict` passes (no broken link, anchor or nav entry)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 150


def links(path: Path) -> list[str]:
    """The targets of the Markdown links in `path` (anchors dropped), outside fenced code blocks."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)]


def pages() -> set[str]:
    return {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}


def test_the_readme_is_a_short_front_door_that_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    first_block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert [ln.split()[:2] for ln in first_block] == [["make", "demo"], ["make", "test"]], first_block


@pytest.mark.parametrize("readme", ["README.md", "configs/README.md"])
def test_every_readme_link_leads_to_a_file_of_the_repository(readme):
    path = ROOT / readme
    local = [t for t in links(path) if not re.match(r"[a-z]+:", t)]
    assert local, f"{readme} links no page"
    missing = [t for t in local if not (path.parent / t).exists()]
    assert not missing, f"{readme} links files that do not exist: {missing}"


def test_every_docs_page_is_reachable_from_the_readme_and_in_the_nav():
    from_readme = {t.removeprefix("docs/") for t in links(README) if t.startswith("docs/")}
    assert "index.md" in from_readme, "the README must link docs/index.md, the manual's front page"
    reachable = from_readme | set(links(DOCS / "index.md"))
    unreachable = sorted(pages() - reachable)
    assert not unreachable, f"docs pages linked neither from README.md nor from docs/index.md: {unreachable}"

    def nav_pages(entries) -> set[str]:
        out: set[str] = set()
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out |= nav_pages(value) if isinstance(value, list) else {value}
        return out

    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert nav == pages(), f"mkdocs.yml nav and docs/ differ: not in nav {sorted(pages() - nav)}, " \
                           f"no such page {sorted(nav - pages())}"


def test_the_spec_reference_is_generated_from_the_current_schema():
    from experiments.spec_reference import reference

    expected = reference()
    assert (DOCS / "spec.md").read_text(encoding="utf-8") == expected, (
        "docs/spec.md is stale: run `python -m experiments.spec_reference > docs/spec.md`")
    # every field of every section carries a description (the reference is only as good as they are)
    empty = [ln for ln in expected.splitlines() if ln.startswith("| `") and ln.rstrip().endswith("|  |")]
    assert not empty, f"spec fields without a description (experiments/spec.py Field(description=...)): {empty}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[dev]' brings it)")
def test_the_manual_builds_with_mkdocs_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    expected = {"index.html" if p == "index.md" else p.removesuffix(".md") + "/index.html" for p in pages()}
    assert expected <= built, sorted(expected - built)


@pytest.mark.parametrize("package", ["metrics", "paper_figures"])
def test_the_docstring_examples_of_the_standalone_packages_hold(package):
    """Their docstring examples are their users' first documentation: each must still print what it shows."""
    import doctest
    import importlib
    import pkgutil

    failed = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        if result.failed:
            failed.append(f"{module.__name__}: {result.failed} of {result.attempted}")
    assert not failed, failed
