"""docs/submit-a-backbone.md, run: every shell command of its ```bash blocks, in order, in a fresh folder.

Offline and small: pretrained weights cannot be downloaded here, so `-w pretrained` is dropped (the
grid keeps its random-init runs), the `shapes-mini` set stands in for Animal-MNIST, and `bob check`
mocks one suite. Each command must exit 0; a `bob run` must leave exactly the result files its own
`--dry-run --json` planned, and `bob leaderboard` its three files.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.cli_harness import invoke

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "submit-a-backbone.md"
# (guide text, what runs here): the guide's own commands, made offline and small.
OFFLINE = (("-w pretrained ", ""), ("animal-mnist", "shapes-mini"))
EXTRA = {"check": ["--suites", "knn"], "run": ["-q", "--device", "cpu"]}


def guide_commands() -> list[list[str]]:
    """The `bob` commands of the guide's ```bash blocks, continuation lines joined, as argv lists."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.strip().startswith("bob ")]


def offline(argv: list[str]) -> list[str]:
    text = shlex.join(argv)
    for old, new in OFFLINE:
        text = text.replace(old, new)
    return [*shlex.split(text), *EXTRA.get(argv[0], [])]


def test_the_guide_has_the_commands_it_documents() -> None:
    commands = [argv[0] for argv in guide_commands()]
    assert commands == ["check", "run", "leaderboard"]
    run = guide_commands()[1]
    assert any(w.endswith(":tiny_convnet@random") for w in run), "step 4 pins the factory's weights with @"


@pytest.mark.slow
def test_every_command_of_the_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOB_OFFLINE", "1")
    for argv in map(offline, guide_commands()):
        planned: list[str] = []
        if argv[0] == "run":
            code, text = invoke([*argv, "--dry-run", "--json"], capsys)
            assert code == 0, text
            planned = [r["result"] for r in json.loads(text)["planned"]]
            assert planned and not (tmp_path / "results").exists(), "a dry run wrote something"
        code, text = invoke(argv, capsys)
        assert code == 0, f"`bob {shlex.join(argv)}` exited {code}:\n{text}"
        if argv[0] == "run":
            written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results/raw").rglob("*.json"))
            assert written == sorted(planned)
        if argv[0] == "leaderboard":
            for suffix in ("csv", "md", "html"):
                assert (tmp_path / "results" / f"leaderboard.{suffix}").is_file()
