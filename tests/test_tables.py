"""The run tables: identity columns never cut, fractions as on the leaderboard, counts compact."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from bob.cli.tables import format_metric, gap_table, results_tables
from bob.leaderboard import format as board_format
from bob.results import RunResult
from bob.runner import RunOutcome
from bob.spec import RunSpec

LONG_BACKBONE = "timm/vit_giant_patch16_gap_224.in22k_ijepa"
LONG_TASK = "ood/shapes-mini-c"


def _outcome(backbone: str, task: str, metrics: dict[str, float], weights: str = "pretrained") -> RunOutcome:
    spec = RunSpec(backbone=backbone, task=task, weights=weights)
    main = next(iter(metrics))
    result = RunResult(
        id=spec.id,
        status="ok",
        spec=spec.to_dict(),
        task={"name": task, "main_metric": main},
        metrics=metrics,
        timings={"total_s": 12.5},
    )
    return RunOutcome(spec, result, Path("unused.json"))


def _render(table: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(table)
    return console.export_text()


def _column_text(text: str, column: int) -> str:
    """The body text of one column (0-based), joined over every line of the table's body."""
    body = text.split("┡", 1)[1].splitlines()[1:]
    parts = [line.split("│")[column + 1].strip() for line in body if line.startswith("│")]
    return "".join(parts)


def _header_text(text: str, column: int) -> str:
    head = text.split("┡", 1)[0].splitlines()
    parts = [line.split("┃")[column + 1].strip() for line in head if line.startswith("┃")]
    return "".join(parts)


@pytest.mark.parametrize("width", [80, 150])
def test_identity_columns_and_metric_headers_are_never_cut(width: int) -> None:
    names = ["top1", "top1/shapes-mini-c", "top1/gauss-noise-5", "ece", "nll"]
    metrics = {name: 0.5 + i / 100 for i, name in enumerate(names)}
    (table,) = results_tables([_outcome(LONG_BACKBONE, LONG_TASK, metrics, weights="random")], width=width)
    text = _render(table, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    assert _column_text(text, 0) == LONG_BACKBONE
    assert _column_text(text, 1) == "random"
    assert _column_text(text, 2) == LONG_TASK
    header = text.split("┡", 1)[0]
    columns = header.splitlines()[1].count("┳") + 1
    shown = [_header_text(text, i) for i in range(5, columns - 1)]
    assert shown == names[: len(shown)] and shown, "whole metric headers, main metric first"
    hidden = len(names) - len(shown)
    assert (f"{hidden} more metric" in text) == (hidden > 0)
    if width >= 150:
        assert hidden == 0


def test_fractions_print_as_the_leaderboard_prints_raw_scores() -> None:
    (table,) = results_tables([_outcome("torchvision/mobilenet_v2", "knn/shapes", {"top1": 0.93625})])
    text = _render(table, 150)
    board_cell = board_format.num(0.93625, 4)  # the board's raw-score cell for the same value
    assert _column_text(text, 5) == board_cell
    assert "%" not in text and "93.6" not in text  # not a percentage


def test_gap_is_in_the_metrics_unit() -> None:
    pretrained = _outcome("torchvision/mobilenet_v2", "knn/shapes", {"top1": 0.9}, "pretrained")
    random = _outcome("torchvision/mobilenet_v2", "knn/shapes", {"top1": 0.75}, "random")
    text = _render(gap_table([pretrained, random]), 150)
    assert _column_text(text, 5) == "0.9000" and _column_text(text, 6) == "0.7500"
    assert _column_text(text, 7) == f"{0.9 - 0.75:+.4f}"


def test_costs_print_counts_compactly() -> None:
    params, macs = 2_223_872.0, 3.1e9
    assert format_metric("params", params, fractions=False) == "2.2M"
    assert format_metric("macs", macs, fractions=False) == "3.1G"
    assert format_metric("params", 1.5e9, fractions=False) == "1.5B"  # parameters in billions, as `bob ls`
    assert format_metric("latency_ms", 12.3456, fractions=False) == "12.35"
    assert format_metric("throughput_img_s", 250_000.0, fractions=False) == "250.0K"
    assert format_metric("top1", None) == "—"
    (table,) = results_tables(
        [
            _outcome(
                "torchvision/mobilenet_v2",
                "efficiency/cpu",
                {"latency_ms": 4.2, "params": params, "macs": macs},
            )
        ]
    )
    text = _render(table, 150)
    assert "e+" not in text
    assert _column_text(text, 6) == "2.2M" and _column_text(text, 7) == "3.1G"
