"""Paired comparison of two backbones on every setting both ran: `bob compare A B [--task T ...]`.

For each shared setting (task + the args that vary, as on the board):

- the difference Δ = A − B of the seed-mean main metric, in the metric's units;
- its interval: the percentile bootstrap of Δ over resamples of the *same* test samples for both
  (bob.samples.draws gives every run on a test set the same draws) and of each side's seeds;
- a paired test: McNemar's exact test where it applies (top-1-like 0/1 outcomes, one run per side,
  the same test samples), else the two-sided paired-bootstrap test, p = 2 · min(P*(Δ ≤ 0),
  P*(Δ ≥ 0)) with the +1 correction (the test that matches the interval: p < α exactly when the
  (1 − α) interval excludes 0, up to that correction);
- Holm's step-down correction across the settings compared (family-wise error rate α), and a verdict.

Torch-free: it reads result and per-sample files only (pandas, numpy, scipy.special).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import bdtr

from bob.errors import UsageError
from bob.leaderboard.aggregate import BoardOptions, build_board
from bob.leaderboard.intervals import bounds
from bob.leaderboard.load import load_results
from bob.leaderboard.replicate_store import ReplicateStore
from bob.leaderboard.replicates import (
    RunSamples,
    cell_candidates,
    cell_replicates,
    default_bootstrap_cache,
    load_run_samples,
    run_replicates,
)

CORRECTION = "Holm"
BOOTSTRAP_TEST = "paired bootstrap"
MCNEMAR_TEST = "McNemar (exact)"


@dataclass
class SettingComparison:
    setting: str
    metric: str
    higher_is_better: bool
    a: float  # seed-mean main metric of A
    b: float
    diff: float  # A − B, in the metric's units
    ci_low: float = math.nan
    ci_high: float = math.nan
    test: str = ""
    p: float = math.nan
    p_holm: float = math.nan
    verdict: str = ""
    note: str = ""


@dataclass
class Comparison:
    a: str  # backbone keys as on the board
    b: str
    alpha: float
    resamples: int
    seed: int
    settings: list[SettingComparison] = field(default_factory=list)
    correction: str = CORRECTION

    @property
    def verdict(self) -> str:
        """One sentence: on how many settings each is better after the correction."""
        tested = [s for s in self.settings if not math.isnan(s.p_holm)]
        better = sum(s.verdict == "A better" for s in tested)
        worse = sum(s.verdict == "B better" for s in tested)
        untested = len(self.settings) - len(tested)
        level = f"{1 - self.alpha:.0%}"
        if not tested:
            return f"No setting could be tested: none of the {len(self.settings)} shared settings has per-sample files on both sides."
        head = (
            f"{self.a} is better than {self.b} on {better} of {len(tested)} settings and worse on {worse} "
            f"({CORRECTION}-corrected, family-wise {level})"
        )
        if better and not worse:
            tail = f"; overall, {self.a} is the better backbone on these settings."
        elif worse and not better:
            tail = f"; overall, {self.b} is the better backbone on these settings."
        elif better and worse:
            tail = "; neither is better everywhere: the answer depends on the task."
        else:
            tail = "; the two cannot be told apart on these test sets."
        extra = f" {untested} setting(s) without per-sample files were not tested." if untested else ""
        return head + tail + extra

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(s) for s in self.settings])

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "a": self.a,
            "b": self.b,
            "alpha": self.alpha,
            "resamples": self.resamples,
            "seed": self.seed,
            "correction": self.correction,
            "settings": [{k: clean(v) for k, v in asdict(s).items()} for s in self.settings],
            "verdict": self.verdict,
        }


def bootstrap_p(diff_reps: np.ndarray) -> float:
    """Two-sided paired-bootstrap p-value of 'no difference', with the +1 correction."""
    d = diff_reps[np.isfinite(diff_reps)]
    if len(d) == 0:
        return math.nan
    below, above = (
        (np.count_nonzero(d <= 0) + 1) / (len(d) + 1),
        (np.count_nonzero(d >= 0) + 1) / (len(d) + 1),
    )
    return float(min(1.0, 2.0 * min(below, above)))


def mcnemar_p(a_right: np.ndarray, b_right: np.ndarray) -> float:
    """McNemar's exact (binomial) two-sided p on the discordant pairs."""
    only_a = int(np.count_nonzero(a_right & ~b_right))
    only_b = int(np.count_nonzero(~a_right & b_right))
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * bdtr(min(only_a, only_b), n, 0.5)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out.tolist()


def resolve_backbone(name: str, keys: Sequence[str], table: pd.DataFrame) -> str:
    """A board key from `name`: the key itself, or a backbone name (its pretrained weights when it has
    them, else its only key). Ambiguity and unknown names are usage errors listing the choices."""
    if name in keys:
        return name
    matches = table.loc[table["backbone"] == name, "backbone_key"].tolist()
    pretrained = [k for k in matches if k == f"{name} [pretrained]"]
    if len(pretrained) == 1:
        return pretrained[0]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"'{name}' names {len(matches)} rows: {', '.join(matches)}; pass one of them (quoted)."
        )
    close = [k for k in keys if name.lower() in k.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UsageError(f"No results for backbone '{name}' in this results dir.{hint}")


def _mcnemar_applies(samples: RunSamples, run_a: list[str], run_b: list[str]) -> bool:
    if len(run_a) != 1 or len(run_b) != 1 or run_a[0] not in samples.sets or run_b[0] not in samples.sets:
        return False
    sa, sb = samples.sets[run_a[0]], samples.sets[run_b[0]]
    return sa.binary and sb.binary and sa.key == sb.key


def _hits(samples: RunSamples, run_id: str) -> np.ndarray:
    s = samples.sets[run_id]
    values = (s.arrays["pred"] == s.arrays["label"]) if "pred" in s.arrays else s.arrays["value"] > 0.5
    return np.asarray(values, dtype=bool)


def _shared_settings(cells: pd.DataFrame, key_a: str, key_b: str, tasks: Sequence[str]) -> list[str]:
    """The settings both rows have (matching a `tasks` glob, by task or setting name, when given)."""
    shared = sorted(set(cells.loc[key_a].index) & set(cells.loc[key_b].index))
    if tasks:
        shared = [
            s
            for s in shared
            if any(
                fnmatch.fnmatchcase(cells.loc[(key_a, s), "task"], t) or fnmatch.fnmatchcase(s, t)
                for t in tasks
            )
        ]
    if not shared:
        raise UsageError(
            f"{key_a} and {key_b} share no setting{' matching --task' if tasks else ''}; nothing to compare."
        )
    return shared


def _one_setting(
    row: pd.Series, other: pd.Series, cands: tuple[dict[str, list[str]], dict[str, list[str]]],
    samples: RunSamples, reps: dict[str, np.ndarray], resamples: int, seed: int, confidence: float,
) -> SettingComparison:  # fmt: skip
    hib = bool(row["higher_is_better"])
    sign = 1.0 if hib else -1.0
    out = SettingComparison(
        row["setting"], row["main_metric"], hib, row["mean"], other["mean"], row["mean"] - other["mean"]
    )
    rep_a, why_a = cell_replicates(cands[0], hib, row["backbone_key"], reps, resamples, seed)
    rep_b, why_b = cell_replicates(cands[1], hib, other["backbone_key"], reps, resamples, seed)
    if rep_a is None or rep_b is None:
        out.note = f"no interval: {'A' if rep_a is None else 'B'} — {why_a if rep_a is None else why_b}"
        return out
    runs_a = [i for g in cands[0].values() for i in g]
    runs_b = [i for g in cands[1].values() for i in g]
    keys = {samples.sets[i].key for i in runs_a + runs_b}
    diff = sign * (rep_a - rep_b)  # metric units
    out.ci_low, out.ci_high = bounds(diff, confidence)
    if len(keys) > 1:
        out.note = "unpaired: the runs scored different test samples, so resamples are independent"
    if _mcnemar_applies(samples, runs_a, runs_b):
        out.test, out.p = MCNEMAR_TEST, mcnemar_p(_hits(samples, runs_a[0]), _hits(samples, runs_b[0]))
    else:
        out.test, out.p = BOOTSTRAP_TEST, bootstrap_p(rep_a - rep_b)
    return out


def compare(
    results_dir: Path | str,
    a: str,
    b: str,
    tasks: Sequence[str] = (),
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    best_of: Sequence[str] = (),
    cache_dir: Path | None = None,
) -> Comparison:
    """Compare backbones `a` and `b` (board keys or names) on every setting both ran (only tasks
    matching a `tasks` glob, when given)."""
    if not 0 < alpha < 0.5:
        raise UsageError(f"--alpha must be in (0, 0.5), e.g. 0.05; got {alpha}.")
    options = BoardOptions(best_of=tuple(best_of), min_backbones=2, intervals=False, resamples=resamples)
    results_dir = Path(results_dir)
    loaded = load_results(results_dir)
    if loaded.runs.empty:
        raise UsageError(f"Results dir {results_dir} holds no successful run to compare.")
    board = build_board(loaded, options)
    keys = board.table["backbone_key"].tolist()
    key_a, key_b = resolve_backbone(a, keys, board.table), resolve_backbone(b, keys, board.table)
    if key_a == key_b:
        raise UsageError(f"Both names resolve to {key_a}; compare two different rows.")
    cells = board.cells.set_index(["backbone_key", "setting"])
    shared = _shared_settings(cells, key_a, key_b, tasks)
    runs = board.runs[board.runs["backbone_key"].isin([key_a, key_b]) & board.runs["setting"].isin(shared)]
    samples = load_run_samples(runs, results_dir)  # every file read: McNemar needs the outcomes
    store = ReplicateStore(cache_dir or default_bootstrap_cache(), resamples, seed)
    reps = run_replicates(samples, resamples, seed, store)
    candidates = cell_candidates(runs)
    result = Comparison(key_a, key_b, alpha, resamples, seed)
    for setting in shared:
        row, other = cells.loc[(key_a, setting)].copy(), cells.loc[(key_b, setting)].copy()
        row["backbone_key"], other["backbone_key"], row["setting"] = key_a, key_b, setting
        pair = (candidates[(key_a, setting)], candidates[(key_b, setting)])
        result.settings.append(_one_setting(row, other, pair, samples, reps, resamples, seed, 1 - alpha))
    return _judge(result)


def _judge(result: Comparison) -> Comparison:
    """Holm-adjust the settings' p-values and give each its verdict."""
    for s, adjusted in zip(result.settings, holm([s.p for s in result.settings]), strict=True):
        s.p_holm = adjusted
        if math.isnan(adjusted):
            s.verdict = "not tested"
        elif adjusted < result.alpha:
            s.verdict = "A better" if s.diff * (1 if s.higher_is_better else -1) > 0 else "B better"
        else:
            s.verdict = "no significant difference"
    return result
