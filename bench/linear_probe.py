"""Linear probe: bob's batched protocol against clip-benchmark's and a sequential scikit-learn sweep.

All three methods see the SAME cached features and the SAME train / val / test partition:

  features  pooled features of the pretrained torchvision MobileNetV2 (ImageNet) on the dataset's
            train and test splits at 64 px (resize only, crop_pct 1.0), extracted once with bob and
            cached in a .npz under --cache-dir; val is a stratified 20% of train (seed --seed).
  bob       `bob.tasks.common.probe.run_linear_probe` with the default `ProbeArgs()`:
            standardised features, Adam heads for a whole round of λ candidates trained together.
  clip-benchmark
            `clip_benchmark.metrics.linear_probe.evaluate` (the package's own protocol: one AdamW
            `nn.Linear` per weight decay, trained one after another), with its CLI defaults: lr 0.1,
            10 epochs, batch 64, fewshot_k -1. Its feature cache is pre-written from our features,
            L2-normalised as its Featurizer does with normalize=True, so it never runs a model.
            num_workers is 0: on a 2-core machine its DataLoader workers only add process start-up
            cost to every one of its ~20 training runs (the features are in-memory tensors).
            amp is off on the CPU (its default, on, is used on CUDA). It asserts device == 'cuda'
            and calls `.cuda()`; without a GPU it runs under a documented shim (see
            `cuda_calls_stay_on_cpu`); with a GPU it runs unpatched. Its `accuracy()` fails under
            NumPy >= 2.4; only then is an equivalent top-k accuracy swapped in for the call.
  sklearn   a sequential C sweep of `LogisticRegression(max_iter=1000)` on features standardised
            with train statistics, best C on val, refit on train + val, scored on test.

Targets: bob at least 10x faster than clip-benchmark; bob's top-1 within 0.5 point of it.

    python bench/linear_probe.py
    python bench/linear_probe.py --skip-sklearn --cache-dir /tmp/bob-bench
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import BUSY_THRESHOLD, ForeignLoad, cpu_count, describe_foreign, ensure_offline_weights

BACKBONE = "torchvision/mobilenet_v2"
IMAGE_SIZE = 64
SPEED_TARGET = 10.0  # clip-benchmark time / bob time
ACC_TARGET = 0.5  # |top-1 difference| in points
SKLEARN_C_GRID = np.logspace(-4, 2, num=13)
# clip-benchmark's CLI defaults for the linear probe.
CB_LR, CB_EPOCHS, CB_BATCH, CB_FEWSHOT_K = 0.1, 10, 64, -1


# ------------------------------------------------------------------------------------------ features


def load_features(dataset: str, cache_dir: Path, device: str) -> dict[str, np.ndarray]:
    """Pooled train/test features and labels, from the .npz cache or extracted (and cached) once."""
    from bob.backbones import resolve_backbone
    from bob.data import load_split

    ensure_offline_weights()
    ref = resolve_backbone(BACKBONE, weights="pretrained")
    data_config = ref.data_config.with_overrides(image_size=IMAGE_SIZE, crop_pct=1.0)
    splits = {name: load_split(dataset, name) for name in ("train", "test")}
    identity = {
        "backbone": ref.identity(),
        "data_config": data_config.to_dict(),
        "splits": {name: split.fingerprint for name, split in splits.items()},
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir / f"{dataset}-{BACKBONE.replace('/', '_')}-{IMAGE_SIZE}px-{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            print(f"features: cached {path}")
            return {k: cached[k] for k in cached.files}

    from bob.features import default_num_workers, extract_pooled, split_batches

    backbone = ref.build(IMAGE_SIZE).to(device)
    out: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for name, split in splits.items():
        batches = split_batches(split, data_config, 128, default_num_workers(), torch.device(device))
        out[f"x_{name}"] = extract_pooled(backbone, batches, len(split), torch.device(device))
        out[f"y_{name}"] = split.labels
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    print(f"features: extracted in {time.perf_counter() - start:.1f} s, cached to {path}")
    return out


# -------------------------------------------------------------------------------------------- methods


def run_bob(train, val, test, num_classes: int, seed: int, device: str) -> dict[str, Any]:
    from bob.tasks.common import linear_head  # noqa: F401  (import outside the timed region)
    from bob.tasks.common.args import ProbeArgs
    from bob.tasks.common.probe import run_linear_probe

    args = ProbeArgs()
    start = time.perf_counter()
    out = run_linear_probe(train, val, test, num_classes, args, seed, device)
    secs = time.perf_counter() - start
    lam = out["protocol"]["selected_weight_decay"]
    return {"secs": secs, "top1": 100 * out["metrics"]["top1"], "reg": f"λ={lam:.3g}", "lambda": lam}


def _is_cuda(device: Any) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda"
    )


@contextlib.contextmanager
def cuda_calls_stay_on_cpu() -> Iterator[None]:
    """The CPU shim for clip-benchmark's CUDA-only linear probe (used only when CUDA is unavailable).

    While active: `torch.nn.Module.cuda` and `torch.Tensor.cuda` return `self`, and `torch.Tensor.to`
    maps a CUDA device argument to the CPU (its `infer` moves batches with `.to(device)`). Its
    `device == 'cuda'` assert then passes, `torch.autocast('cuda', enabled=False)` is a no-op,
    `DataParallel` with no GPUs wraps the module unchanged, and `pin_memory` is skipped. The
    warnings those two emit without a GPU are silenced. Everything is restored on exit.
    """
    saved = {
        (owner, attr): owner.__dict__.get(attr)
        for owner, attr in ((torch.nn.Module, "cuda"), (torch.Tensor, "cuda"), (torch.Tensor, "to"))
    }
    original_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if _is_cuda(a) else a for a in args)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            yield
    finally:
        for (owner, attr), value in saved.items():
            if value is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, value)


def _topk_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[float]:
    """Top-k accuracy (fractions), the value clip-benchmark's `accuracy` computes."""
    ranked = logits.argsort(dim=1, descending=True)
    hits = ranked == target.view(-1, 1).to(ranked.dtype)
    return [hits[:, :k].any(dim=1).float().mean().item() for k in topk]


@contextlib.contextmanager
def numpy2_accuracy_fix(cb_linear_probe: Any) -> Iterator[bool]:
    """clip-benchmark 1.6.2's `accuracy` calls float() on a 1-element array, an error since NumPy 2.4.

    When (and only when) its own function raises that error, the name its linear-probe module calls
    is pointed at `_topk_accuracy` (same value) for the duration; yields whether it was needed.
    """
    original = cb_linear_probe.accuracy
    try:
        original(torch.tensor([[0.0, 1.0]]), torch.tensor([1.0]), topk=(1,))
        needed = False
    except TypeError:
        needed = True
    if needed:
        cb_linear_probe.accuracy = _topk_accuracy
    try:
        yield needed
    finally:
        cb_linear_probe.accuracy = original


def run_clip_benchmark(train, val, test, seed: int, verbose: bool) -> dict[str, Any]:
    try:
        from clip_benchmark.metrics import linear_probe as cb_linear_probe
    except ImportError as err:
        raise SystemExit(
            "clip-benchmark is not installed: pip install 'clip-benchmark>=1.6' (or bob-bench[bench])."
        ) from err

    on_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="bob-bench-cb-") as feature_root:
        model_id = BACKBONE.replace("/", "_")
        feature_dir = Path(feature_root) / model_id
        feature_dir.mkdir()
        # Its cache layout: features_{split}.pt (L2-normalised, as Featurizer(normalize=True) writes
        # them) and targets_{split}.pt; targets_train.pt existing means "skip featurization".
        for name, (x, y) in {"train": train, "val": val, "test": test}.items():
            feats = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)
            torch.save(feats, feature_dir / f"features_{name}.pt")
            torch.save(torch.from_numpy(y).long(), feature_dir / f"targets_{name}.pt")

        shim = contextlib.nullcontext() if on_gpu else cuda_calls_stay_on_cpu()
        sink = io.StringIO()  # it prints a line every 20 steps and draws tqdm bars
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(sink)
        quiet_err = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(sink)
        torch.manual_seed(seed)  # it draws a permutation of train before seeding its own training
        start = time.perf_counter()
        with shim, numpy2_accuracy_fix(cb_linear_probe) as accuracy_fixed, quiet, quiet_err:
            out = cb_linear_probe.evaluate(
                torch.nn.Identity(),  # never called: the features are already cached
                None,  # train_dataloader: unused when the cache exists
                None,  # test dataloader: unused when the cache exists
                fewshot_k=CB_FEWSHOT_K,
                batch_size=CB_BATCH,
                num_workers=0,
                lr=CB_LR,
                epochs=CB_EPOCHS,
                model_id=model_id,
                seed=seed,
                feature_root=feature_root,
                device="cuda",
                val_dataloader=(),  # only tested against None: turns on its weight-decay sweep
                normalize=True,
                amp=on_gpu,
                verbose=False,
            )
        secs = time.perf_counter() - start
    wd = out["weight_decay"]
    return {
        "secs": secs,
        "top1": 100 * out["lp_acc1"],
        "reg": f"wd={wd:.3g}",
        "wd": wd,
        "gpu": on_gpu,
        "accuracy_fixed": accuracy_fixed,
    }


def run_sklearn(train, val, test) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    not_converged = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scaler = StandardScaler().fit(train[0])
        xt, xv = scaler.transform(train[0]), scaler.transform(val[0])
        val_acc = []
        for c in SKLEARN_C_GRID:
            clf = LogisticRegression(C=float(c), max_iter=1000).fit(xt, train[1])
            val_acc.append(float((clf.predict(xv) == val[1]).mean()))
        best_c = float(SKLEARN_C_GRID[int(np.argmax(val_acc))])  # first maximum: the strongest penalty
        x_all = np.concatenate([train[0], val[0]])
        y_all = np.concatenate([train[1], val[1]])
        scaler = StandardScaler().fit(x_all)
        clf = LogisticRegression(C=best_c, max_iter=1000).fit(scaler.transform(x_all), y_all)
        top1 = float((clf.predict(scaler.transform(test[0])) == test[1]).mean())
        not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    secs = time.perf_counter() - start
    return {
        "secs": secs,
        "top1": 100 * top1,
        "reg": f"C={best_c:.3g}",
        "C": best_c,
        "val_acc": val_acc,
        "not_converged": not_converged,
    }


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="animal-mnist", help="a bob dataset with train and test splits")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="val partitions and training seeds (default 0 1 2)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("~/.cache/bob/bench"),
        help="where the extracted features are cached (default ~/.cache/bob/bench)",
    )
    p.add_argument("--skip-sklearn", action="store_true", help="skip the scikit-learn C sweep")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)"
    )
    p.add_argument("--verbose", action="store_true", help="show clip-benchmark's own training output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import sklearn

    import bob
    from bob.data import dataset_info
    from bob.data.base import stratified_partition

    try:
        from importlib.metadata import version

        cb_version = version("clip-benchmark")
    except Exception:
        cb_version = "not installed"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"python {platform.python_version()}  torch {torch.__version__}  scikit-learn {sklearn.__version__}  "
        f"clip-benchmark {cb_version}  numpy {np.__version__}  bob {getattr(bob, '__version__', '?')}"
    )
    print(
        f"device {device}  cpu cores {cpu_count()}  torch threads {torch.get_num_threads()}  "
        f"dataset {args.dataset}  seeds {' '.join(map(str, args.seeds))}"
    )

    feats = load_features(args.dataset, args.cache_dir.expanduser(), device)
    num_classes = dataset_info(args.dataset).num_classes or int(feats["y_train"].max()) + 1
    names = ["bob", "clip-benchmark"] + ([] if args.skip_sklearn else ["sklearn"])
    if not args.skip_sklearn:
        print(f"scikit-learn C grid: {', '.join(f'{c:.3g}' for c in SKLEARN_C_GRID)}")

    def methods(train, val, test, seed: int) -> dict[str, Any]:
        table = {
            "bob": lambda: run_bob(train, val, test, num_classes, seed, device),
            "clip-benchmark": lambda: run_clip_benchmark(train, val, test, seed, args.verbose),
            "sklearn": lambda: run_sklearn(train, val, test),
        }
        return {name: table[name] for name in names}

    # Warm-up: every method runs once, untimed, on a small slice, so that imports and one-time
    # initialisation (thread pools, optimizer kernels) are not charged to whichever method runs first.
    print("warm-up: each method once on a 600-sample slice (untimed)", flush=True)
    warm = slice(None, None, max(1, len(feats["y_train"]) // 600))  # strided: every class appears
    small = (feats["x_train"][warm], feats["y_train"][warm])
    with contextlib.redirect_stdout(io.StringIO()):
        for run in methods(small, small, small, args.seeds[0]).values():
            run()

    per_seed: list[dict[str, dict[str, Any]]] = []
    for seed in args.seeds:
        rest, held = stratified_partition(feats["y_train"], 0.2, seed=seed)
        train = (feats["x_train"][rest], feats["y_train"][rest])
        val = (feats["x_train"][held], feats["y_train"][held])
        test = (feats["x_test"], feats["y_test"])
        if seed == args.seeds[0]:
            print(
                f"features: dim {train[0].shape[1]}  train {len(train[0])}  val {len(val[0])}  "
                f"test {len(test[0])}  classes {num_classes}\n"
            )
        results: dict[str, dict[str, Any]] = {}
        for name, run in methods(train, val, test, seed).items():
            with ForeignLoad() as foreign:
                results[name] = run()
            results[name]["foreign"] = foreign.cores
        per_seed.append(results)
        _print_seed(seed, results, len(train[0]) + len(val[0]), len(train[0]))
    return _summary(per_seed, names)


def _print_seed(seed: int, results: dict[str, dict[str, Any]], n_fit: int, n_train: int) -> None:
    bob_res = results["bob"]
    header = f"seed {seed:<11} {'wall s':>8} {'× bob':>7} {'others':>6} {'top-1 %':>8}  chosen regularisation"
    print(header)
    print("-" * len(header))
    notes = {
        "bob": "(mean CE + λ/2·||W||² on standardised features)",
        "clip-benchmark": "(AdamW decoupled weight decay, L2-normalised features"
        + (", CPU shim)" if not results["clip-benchmark"]["gpu"] else ")"),
        "sklearn": "(LogisticRegression, standardised features)",
    }
    for name, res in results.items():
        print(
            f"{name:<16} {res['secs']:>8.2f} {res['secs'] / bob_res['secs']:>7.1f} "
            f"{describe_foreign(res['foreign']):>6} {res['top1']:>8.2f}  {res['reg']} {notes[name]}"
        )
    lam = bob_res["lambda"]
    print(
        f"bob λ={lam:.3g} ≙ sklearn C = 1/(λ·N_train+val) = 1/({lam:.3g}·{n_fit}) = {1 / (lam * n_fit):.3g}"
    )
    if "sklearn" in results:
        sk = results["sklearn"]
        print(
            f"sklearn C={sk['C']:.3g} (chosen on train) ≙ λ = 1/(C·N_train) = {1 / (sk['C'] * n_train):.3g}"
            + (f"; {sk['not_converged']} fit(s) hit max_iter" if sk["not_converged"] else "")
        )
    print()


def _summary(per_seed: list[dict[str, dict[str, Any]]], names: list[str]) -> int:
    total = {name: sum(r[name]["secs"] for r in per_seed) for name in names}
    mean_top1 = {name: float(np.mean([r[name]["top1"] for r in per_seed])) for name in names}
    diffs = [r["bob"]["top1"] - r["clip-benchmark"]["top1"] for r in per_seed]
    print(f"over {len(per_seed)} seed(s): total wall s and mean top-1")
    for name in names:
        print(f"  {name:<16} {total[name]:>8.2f} s   {mean_top1[name]:.2f} %")
    print("others = average cores kept busy by other processes while a method ran.")
    busy = max(r[name]["foreign"] or 0.0 for r in per_seed for name in names)
    if busy > BUSY_THRESHOLD:
        print(
            f"WARNING: other processes used up to {busy:.2f} of {cpu_count()} cores while timing; "
            "wall times and ratios are skewed: rerun on a quiet machine."
        )
    first_cb = per_seed[0]["clip-benchmark"]
    if not first_cb["gpu"]:
        print(
            "clip-benchmark ran on the CPU under a shim: .cuda() is a no-op and .to('cuda') stays on the CPU."
        )
    if first_cb["accuracy_fixed"]:
        print("clip-benchmark's accuracy() fails under NumPy >= 2.4; an equivalent top-k accuracy was used.")
    speedup = total["clip-benchmark"] / total["bob"]
    diff = mean_top1["bob"] - mean_top1["clip-benchmark"]
    line = f"clip-benchmark / bob time = {speedup:.1f}×"
    if "sklearn" in total:
        line += f"   sklearn / bob time = {total['sklearn'] / total['bob']:.1f}×"
    print(line)
    print(
        f"top-1 bob − clip-benchmark: mean {diff:+.2f} pt (per seed: {', '.join(f'{d:+.2f}' for d in diffs)})"
    )
    if "sklearn" in total:
        print(f"top-1 bob − sklearn: mean {mean_top1['bob'] - mean_top1['sklearn']:+.2f} pt")
    speed_ok, acc_ok = speedup >= SPEED_TARGET, abs(diff) <= ACC_TARGET
    verdict = {True: "PASS", False: "FAIL"}
    print(
        f"speed: bob ≥ {SPEED_TARGET:.0f}× faster than clip-benchmark: {verdict[speed_ok]} ({speedup:.1f}×)"
    )
    print(
        f"accuracy: |mean top-1 bob − clip-benchmark| ≤ {ACC_TARGET} pt: {verdict[acc_ok]} ({diff:+.2f} pt)"
    )
    return 0 if speed_ok and acc_ok else 1


if __name__ == "__main__":
    sys.exit(main())
