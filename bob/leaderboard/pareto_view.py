"""Accuracy vs MACs: each backbone's GMACs from the efficiency results next to a board column, and
the Pareto front of the two (fewer MACs, higher accuracy).

- Cost: `gmacs` of the efficiency setting chosen with `BoardOptions.pareto_cost` (e.g. `efficiency/224`,
  or `efficiency/224 [image_size=128]` when runs of a task differ in args), by default the setting
  that measured the most backbones. MACs do not depend on weights, so
  a backbone's pretrained row takes the MACs measured on any weights of the same backbone and args
  (efficiency runs are usually made with `--weights random`).
- Accuracy: `BoardOptions.pareto_y`: `overall` (the board's overall z), `suite:<suite>`, `z:<setting>`
  or `value:<setting>` (the setting's seed-mean main metric; lower-is-better metrics are minimised).
- The front is computed over pretrained backbones; random-init baselines are drawn but never on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bob.errors import UsageError
from bob.pareto import pareto_mask

COST_METRIC = "gmacs"
Y_PREFIXES = ("suite:", "z:", "value:")
COLUMNS = ["backbone_key", "family", "is_random", "standing", "cost_task", "gmacs", "y", "y_column", "pareto"]


def y_choices(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c == "overall" or c.startswith(Y_PREFIXES)]


def check_y(table: pd.DataFrame, y: str) -> None:
    choices = y_choices(table)
    if y not in choices:
        raise UsageError(f"--pareto-y {y!r} is not a board column; choose one of: {', '.join(choices)}.")


def _y_maximised(settings: pd.DataFrame, y: str) -> bool:
    if not y.startswith("value:"):
        return True  # z-scores and suite/overall scores are higher-is-better by construction
    row = settings.loc[settings["setting"] == y.removeprefix("value:"), "higher_is_better"]
    return bool(row.iloc[0]) if len(row) else True


def cost_by_backbone(eff_runs: pd.DataFrame, cost_task: str = "") -> tuple[str, pd.Series]:
    """(the efficiency setting used, mean GMACs per (backbone, backbone_args) over its seeds and
    weights); empty when none measured."""
    column = f"metric:{COST_METRIC}"
    if eff_runs.empty or column not in eff_runs.columns:
        if cost_task:
            raise UsageError(
                f"--pareto-cost {cost_task!r}: no efficiency result with {COST_METRIC} was found."
            )
        return "", pd.Series(dtype=float)
    runs = eff_runs[eff_runs[column].notna()]
    # Settings, not tasks: runs of one task with another image_size count different MACs.
    counts = runs.groupby("setting")["backbone"].nunique()
    if cost_task and cost_task not in counts.index:
        raise UsageError(
            f"--pareto-cost {cost_task!r} has no {COST_METRIC} results; settings with some: "
            f"{', '.join(counts.index) or 'none'}."
        )
    if not cost_task and len(counts):
        # The setting that measured the most backbones; ties go to the first name in sorted order.
        cost_task = str(counts.sort_index().idxmax())
    chosen = runs[runs["setting"] == cost_task]
    return cost_task, chosen.groupby(["backbone", "backbone_args"])[column].mean()


def pareto_frame(
    table: pd.DataFrame, eff_runs: pd.DataFrame, settings: pd.DataFrame, y: str, cost_task: str = ""
) -> pd.DataFrame:
    """One row per shown backbone with both a cost and a `y` value; `pareto` marks the front."""
    check_y(table, y)
    task, cost = cost_by_backbone(eff_runs, cost_task)
    if cost.empty:
        return pd.DataFrame(columns=COLUMNS)
    keys = pd.MultiIndex.from_frame(table[["backbone", "backbone_args"]])
    frame = pd.DataFrame(
        {
            "backbone_key": table["backbone_key"].to_numpy(),
            "family": table["family"].to_numpy(),
            "is_random": table["is_random"].astype(bool).to_numpy(),
            "standing": table["standing"].to_numpy(),
            "cost_task": task,
            "gmacs": cost.reindex(keys).to_numpy(dtype=float),
            "y": pd.to_numeric(table[y], errors="coerce").to_numpy(dtype=float),
            "y_column": y,
        }
    )
    frame = frame[np.isfinite(frame["gmacs"]) & np.isfinite(frame["y"])].reset_index(drop=True)
    frame["pareto"] = False
    reference = ~frame["is_random"]
    if reference.any():
        points = frame.loc[reference, ["gmacs", "y"]].to_numpy()
        mask = pareto_mask(points, minimize=(True, not _y_maximised(settings, y)))
        frame.loc[reference[reference].index[mask], "pareto"] = True
    return frame.sort_values(["gmacs", "backbone_key"], kind="stable").reset_index(drop=True)[COLUMNS]
