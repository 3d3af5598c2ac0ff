"""Every relative link in README.md and docs/**/*.md points at a file that exists.

Links are markdown ``[text](target)``, ``![alt](target)`` (``<target>`` in angle brackets too, and an
optional ``"title"``) and reference definitions ``[ref]: target``. http(s) and mailto links and pure
``#anchors`` are not checked; a ``#fragment`` is stripped before the check. Fenced code blocks and
inline code spans are skipped, as markdown does not render links there.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^<>\n]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^<>\n]*>|\S+)", re.M)
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.I)


def markdown_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def link_targets(text: str) -> list[str]:
    """The link targets of a markdown text, in order, outside code."""
    text = FENCE.sub("", text)
    text = CODE_SPAN.sub("", text)
    found = [(m.start(), m.group(1)) for m in INLINE.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE.finditer(text)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for _, t in sorted(found)]


def broken_links(files: list[Path], repo: Path = REPO) -> list[str]:
    """``file: link`` for every relative link whose file does not exist."""
    broken = []
    for md in files:
        for target in link_targets(md.read_text(encoding="utf-8")):
            path = unquote(target.split("#", 1)[0].split("?", 1)[0])
            if not path or EXTERNAL.match(target):
                continue
            resolved = repo / path.lstrip("/") if path.startswith("/") else md.parent / path
            if not resolved.exists():
                broken.append(f"{md.relative_to(repo)}: {target}")
    return broken


def test_every_relative_link_in_the_docs_resolves():
    files = markdown_files()
    assert (REPO / "README.md") in files and len(files) > 2
    broken = broken_links(files)
    assert not broken, f"{len(broken)} broken link(s) (file: link):\n" + "\n".join(broken)


def test_the_checker_finds_broken_links_and_ignores_the_rest(tmp_path):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "a b.png").write_bytes(b"")
    (tmp_path / "docs" / "DATA.md").write_text("# Data\n")
    (tmp_path / "README.md").write_text(
        "[data](docs/DATA.md#sets) [gone](docs/GONE.md) ![img](<docs/img/a b.png>) ![lost](docs/img/lost.png)\n"
        "[web](https://example.org/x) [mail](mailto:a@b.c) [top](#top) [t](docs/DATA.md \"title\")\n"
        "`[code](docs/NOT_A_LINK.md)`\n```\n[fenced](docs/ALSO_NOT.md)\n```\n[ref]: docs/REF_GONE.md\n")
    (tmp_path / "docs" / "page.md").write_text("[up](../README.md) [img](img/a%20b.png) [bad](../docs/img/none.png)\n")
    assert broken_links(markdown_files(tmp_path), tmp_path) == [
        "README.md: docs/GONE.md", "README.md: docs/img/lost.png", "README.md: docs/REF_GONE.md",
        "docs/page.md: ../docs/img/none.png"]
