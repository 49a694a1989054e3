"""The docs stand alone: README.md and docs/*.md never point outside the repository.

A clone has no product contract beside it and no shared folder, so the docs may not cite
them; every relative link must resolve to a file of the repository (and its #anchor to a
heading there), and every "§N" must be a numbered section of a doc named on the same line
(or of the doc itself).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FORBIDDEN = [
    (re.compile(r"SPEC\.md|\bSPEC\b"), "the product contract is not in the repository"),
    (re.compile(r"\bthe spec\b|\bspec's\b|\bspec\s*§", re.I), "'the spec' is not in the repository"),
    (re.compile(r"(?<![\w.])shared/"), "the shared folder is not in the repository"),
    (re.compile(r"/work/|/home/\w"), "a path on someone's machine"),
    (re.compile(r"(?<![\w.])\.\./"), "a path above the repository"),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# "RFC 9110 §7.8" is a section of a published standard, not of these docs.
SECTION = re.compile(r"(?<!RFC \d{4} )§\s*(\d+(?:\.\d+)*)")
DOC_NAME = re.compile(r"\b([\w-]+\.md)\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            lines.append(line.lstrip("#").strip())
    return lines


def numbered_sections(path: Path) -> set[str]:
    return {m.group(1) for h in headings(path) if (m := re.match(r"(\d+(?:\.\d+)*)\.?\s", h))}


def resolve_doc(name: str, beside: Path) -> Path | None:
    for candidate in (beside.parent / name, ROOT / "docs" / name, ROOT / name):
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_points_nowhere_outside_the_repository(doc: Path):
    problems = []
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        # A markdown link is checked below by where it resolves (../BENCHMARKS.md from docs/
        # is inside the repository); the patterns look at the rest of the line.
        prose = LINK.sub("", line)
        for pattern, why in FORBIDDEN:
            if pattern.search(prose):
                problems.append(f"{doc.name}:{number}: {why}: {line.strip()[:120]}")
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https://..., mailto:: a public page, not a path
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (doc.parent / path_part).resolve() if path_part else doc
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{doc.name}:{number}: link outside the repository: {target}")
                continue
            if not resolved.exists():
                problems.append(f"{doc.name}:{number}: link to a missing file: {target}")
                continue
            if anchor and resolved.is_file() and resolved.suffix == ".md":
                if anchor not in {slug(h) for h in headings(resolved)}:
                    problems.append(f"{doc.name}:{number}: no heading #{anchor} in {resolved.name}")
        sections = SECTION.findall(line)
        if sections:
            named = [d for name in DOC_NAME.findall(line) if (d := resolve_doc(name, doc)) is not None]
            known = set().union(*(numbered_sections(d) for d in named or [doc]))
            for section in sections:
                if section not in known:
                    problems.append(f"{doc.name}:{number}: §{section} is no numbered section of "
                                    f"{', '.join(d.name for d in named or [doc])}")
    assert not problems, "\n".join(problems)


def test_the_check_catches_what_it_is_for(tmp_path, monkeypatch):
    """The patterns above really match the passages they exist for."""
    samples = ["`SPEC.md` (in the shared folder beside this repository)", "the SPEC §7 table",
               "retries on the spec's schedule", "see shared/notes.md", "see ../SPEC.md"]
    for text in samples:
        assert any(p.search(text) for p, _ in FORBIDDEN), text
    assert not any(p.search("see docs/api.md and the OpenAPI description") for p, _ in FORBIDDEN)
    assert not SECTION.search("RFC 9110 §7.8") and SECTION.search("api.md §7")
    assert slug("`POST /v1/events` (scope `events:write`)") == "post-v1events-scope-eventswrite"
