"""The source × target accuracy matrix of single-source domain generalisation, and its summary.

`matrix[source][target]` is the top-1 accuracy of the model trained on `source`, scored on
`target`; the diagonal (`target == source`) is the in-domain accuracy on the source's held-out part.
The headline number follows the AdvStyle / Dassl PACS tables: for each source the mean over its
target domains, then the mean of those over the sources (each source weighs the same, whatever its
number of targets or images). numpy-free arithmetic on plain floats, no torch.
"""

from __future__ import annotations

from statistics import fmean


def summarise_matrix(matrix: dict[str, dict[str, float]]) -> dict[str, float]:
    """Metrics of a (possibly partial: fewer sources than domains) accuracy matrix.

    Returns `top1_target` (mean over sources of the mean target accuracy; the main metric),
    `top1_in_domain` (mean diagonal), `drop` (their difference), `top1_target/<source>` and
    `top1/<source>-><target>` for every cell.
    """
    if not matrix:
        raise ValueError("the accuracy matrix has no source row")
    metrics: dict[str, float] = {}
    per_source, diagonal = [], []
    for source, row in matrix.items():
        targets = [t for t in row if t != source]
        if not targets:
            raise ValueError(f"source '{source}' has no target domain")
        if source not in row:
            raise ValueError(f"source '{source}' has no in-domain (diagonal) accuracy")
        mean_target = fmean(row[t] for t in targets)
        metrics[f"top1_target/{source}"] = mean_target
        per_source.append(mean_target)
        diagonal.append(row[source])
        for target, acc in row.items():
            metrics[f"top1/{source}->{target}"] = float(acc)
    summary = {"top1_target": fmean(per_source), "top1_in_domain": fmean(diagonal)}
    summary["drop"] = summary["top1_in_domain"] - summary["top1_target"]
    return {**summary, **metrics}  # the summary first: result tables show the first few metrics
