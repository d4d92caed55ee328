"""docs/bob-fidelity.md covers every suite that runs BoB's protocol, and is reachable: each such suite's
page and the README link to it, and the links and anchors it uses resolve."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from bob.suites import SUITES

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bob-fidelity.md"


def _bob_suites() -> list[str]:
    return sorted(
        s for s in SUITES.names() if "protocol" in {f.name for f in dataclasses.fields(SUITES.get(s).Args)}
    )


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_bob_suite_has_a_table_and_links_to_the_page():
    text = DOC.read_text()
    suites = _bob_suites()
    assert {"finetune", "linear-probe", "few-label", "detection", "ood", "retrieval"} <= set(suites)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for suite in suites:
        assert any(f"`{suite}/" in h for h in headings), f"no section for {suite} in {DOC.name}"
        page = ROOT / "docs" / "suites" / f"{suite}.md"
        if page.exists():  # linear-probe is documented in docs/protocols.md
            assert "(../bob-fidelity.md)" in page.read_text().splitlines()[-1], page
    assert "(docs/bob-fidelity.md)" in (ROOT / "README.md").read_text()


def test_every_table_row_names_all_four_columns():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    five = [r for r in rows if r.count(" | ") == 4]
    assert len(five) > 60
    for row in five:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert all(cells), row  # no knob without BoB's value, bob's default, protocol=bob and the reason


def test_links_and_anchors_resolve():
    for path in [DOC, ROOT / "docs" / "leaderboard.md", ROOT / "docs" / "sweeps.md"]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(#[^)]+)?\)", path.read_text()):
            file, anchor = target
            linked = (path.parent / file).resolve()
            assert linked.exists(), (path.name, file)
            if anchor:
                headings = [
                    line.lstrip("#") for line in linked.read_text().splitlines() if line.startswith("#")
                ]
                assert anchor[1:] in {_anchor(h) for h in headings}, (path.name, file, anchor)
