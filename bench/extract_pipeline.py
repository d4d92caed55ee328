"""End-to-end extraction from a JPEG folder: bob's image pipeline vs a plain ImageFolder loop and
vs the serial limit, plus what the pipeline options change in the features and on disk.

One run prints, for each pipeline (`pil`, `tensor`):

- throughput (images/s) from the generated `jpeg-folder` dataset through bob's extraction
  (`bob.features.pixel_batches` + `Normalizer` + `extract_pooled`, what a run does) against
  (a) the loop a careful user writes: torchvision `ImageFolder` with the backbone's eval transform
      (Resize, CenterCrop, ToTensor, Normalize), a `DataLoader` with the same batch size and workers,
      `model(x)` under `inference_mode`;
  (b) the serial limit `1 / (1/decode + 1/forward)`, with decode-only (bob's pixel batches,
      normalised, no model) and forward-only (the model on pre-made batches) measured in this run;
- the feature difference of the `tensor` pipeline vs `pil` and of bf16 vs fp32 per family;
- the geometry cache's storage: uint8 arrays vs re-encoded JPEGs, bytes per image and read speed.

Targets (CPU, resnet18 at 224 px): bob >= 1.0 x (a) and >= 0.9 x (b). Exit status 0 when the `pil`
pipeline (the default) meets both.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import BUSY_THRESHOLD, ForeignLoad, cpu_count, describe_foreign

from bob.backbones.meta import Extraction

FAMILY_MODELS = ("timm/resnet18", "timm/vit_small_patch16_224", "timm/swin_tiny_patch4_window7_224")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls, and all of them."""
    secs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - start)
    return statistics.median(secs), secs


def rounds(loops: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each loop over `repeats` rounds; each round runs every loop once, in an
    order rotated from round to round, so a burst of load from another process hits all loops alike
    instead of all passes of one loop."""
    names = list(loops)
    secs: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            loops[name]()
            secs[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in secs.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def user_loop(
    model: torch.nn.Module,
    folder: Path,
    cfg: Any,
    batch: int,
    workers: int,
    device: torch.device,
    extraction: Extraction,
) -> int:
    """The loop a careful user writes with torchvision's ImageFolder and the model's eval transform."""
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.Resize(cfg.resize_size, interpolation=T.InterpolationMode(cfg.interpolation)),
            T.CenterCrop(cfg.input_size),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(folder), transform=transform),
        batch_size=batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    from bob.features import autocast

    memory = torch.channels_last if extraction.channels_last else torch.contiguous_format
    n = 0
    with torch.inference_mode(), autocast(extraction, device):
        for x, _ in loader:
            model(x.to(device, non_blocking=True).contiguous(memory_format=memory))
            n += len(x)
    sync(device)
    return n


def bob_loop(
    backbone: Any,
    split: Any,
    cfg: Any,
    batch: int,
    workers: int,
    device: torch.device,
    extraction: Extraction,
) -> np.ndarray:
    """What a run does on a cache miss (RunContext.pooled without the cache)."""
    from bob.features import extract_pooled, pixel_batches
    from bob.transforms import Normalizer

    batches = pixel_batches(split, cfg, batch, workers, device)
    prepare = Normalizer(cfg, channels_last=extraction.channels_last)
    out = extract_pooled(backbone, batches, len(split), device, prepare=prepare, extraction=extraction)
    sync(device)
    return out


def decode_only(split: Any, cfg: Any, batch: int, workers: int, device: torch.device) -> list[torch.Tensor]:
    from bob.features import pixel_batches
    from bob.transforms import Normalizer

    normalize = Normalizer(cfg)
    out = [normalize(x) for x in pixel_batches(split, cfg, batch, workers, device)]
    sync(device)
    return out


def forward_only(
    backbone: Any, inputs: Iterable[torch.Tensor], device: torch.device, extraction: Any
) -> None:
    from bob.features import autocast

    memory = torch.channels_last if extraction.channels_last else torch.contiguous_format
    with torch.inference_mode(), autocast(extraction, device):
        for x in inputs:
            backbone.forward_pooled(x.contiguous(memory_format=memory))
    sync(device)


def throughput(
    backbone: Any, folder: Path, split: Any, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    device, n, batch, workers = torch.device(args.device), len(split), args.batch_size, args.workers
    rows: dict[str, dict[str, float]] = {}
    model = backbone.model if hasattr(backbone, "model") else backbone
    ext = Extraction(precision=args.precision, channels_last=args.channels_last)
    if ext.channels_last:
        backbone.to(memory_format=torch.channels_last)
    for pipeline in args.pipelines:
        cfg = backbone.data_config.with_overrides(pipeline=pipeline)
        inputs = decode_only(split, cfg, batch, workers, device)  # also the warm-up of the decode path
        forward_only(backbone, inputs[:1], device, ext)
        loops = {
            "user": lambda cfg=cfg: user_loop(model, folder, cfg, batch, workers, device, ext),
            "bob": lambda cfg=cfg: bob_loop(backbone, split, cfg, batch, workers, device, ext),
            "decode": lambda cfg=cfg: decode_only(split, cfg, batch, workers, device),
            "forward": lambda inputs=inputs: forward_only(backbone, inputs, device, ext),
        }
        with ForeignLoad() as load:
            med = rounds(loops, args.repeats)
        t_user, t_bob, t_dec, t_fwd = med["user"], med["bob"], med["decode"], med["forward"]
        serial = 1 / (t_dec / n + t_fwd / n)
        rows[pipeline] = {
            "user": n / t_user,
            "bob": n / t_bob,
            "decode": n / t_dec,
            "forward": n / t_fwd,
            "serial": serial,
            "vs_user": (n / t_bob) / (n / t_user),
            "vs_serial": (n / t_bob) / serial,
            "others": load.cores if load.cores is not None else float("nan"),
        }
    return rows


def relative(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Per-image cosine similarity (min, mean) and relative L2 error (max) between two feature sets."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    rel = np.linalg.norm(a64 - b64, axis=1) / np.linalg.norm(a64, axis=1)
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "rel_max": float(rel.max())}


def differences(split: Any, args: argparse.Namespace) -> list[tuple[str, str, dict[str, float]]]:
    """tensor vs pil (resnet18), and bf16 vs fp32 per family, on the first `--diff-images` images."""
    from bob.backbones import resolve_backbone
    from bob.backbones.meta import Extraction
    from bob.features import extract_pooled, pixel_batches
    from bob.transforms import Normalizer

    device = torch.device(args.device)
    subset = split.subset(np.arange(min(args.diff_images, len(split))), "diff")
    rows = []

    def features(backbone: Any, pipeline: str = "pil", precision: str = "fp32") -> np.ndarray:
        cfg = backbone.data_config.with_overrides(pipeline=pipeline)
        batches = pixel_batches(subset, cfg, args.batch_size, args.workers, device)
        return extract_pooled(
            backbone,
            batches,
            len(subset),
            device,
            prepare=Normalizer(cfg),
            extraction=Extraction(precision=precision),
        )

    for i, name in enumerate(args.family_models):
        torch.manual_seed(0)
        backbone = resolve_backbone(name, "random", seed=0).build().eval().to(device)
        family = backbone.meta.family
        reference = features(backbone)
        if i == 0:
            rows.append((name, f"{family}: tensor vs pil", relative(reference, features(backbone, "tensor"))))
        low = "fp16" if device.type == "cuda" and args.fp16 else "bf16"
        rows.append(
            (name, f"{family}: {low} vs fp32", relative(reference, features(backbone, precision=low)))
        )
    return rows


def storage(split: Any, cfg: Any, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    """(format, bytes per image, read images/s, mean |pixel error|) of the geometry cache's candidates."""
    from PIL import Image
    from torchvision.io import decode_jpeg

    from bob.features import pixel_batches

    pixels = torch.cat(list(pixel_batches(split, cfg, args.batch_size, args.workers, torch.device("cpu"))))
    n = len(pixels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pixels.npy"
        np.save(path, pixels.numpy())
        per_image = path.stat().st_size / n

        def read_npy() -> None:
            array = np.load(path, mmap_mode="r")
            for s in range(0, n, args.batch_size):
                torch.from_numpy(np.array(array[s : s + args.batch_size]))

        t, _ = timed(read_npy, args.repeats)
        rows.append(("uint8 .npy (chosen)", per_image, n / t, 0.0))
        for quality in (95, 90):
            blobs = []
            for image in pixels:
                buf = io.BytesIO()
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
                blobs.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
            decoded = torch.stack(decode_jpeg(blobs))
            error = float((decoded.float() - pixels.float()).abs().mean())
            t, _ = timed(
                lambda blobs=blobs: [
                    decode_jpeg(blobs[s : s + args.batch_size]) for s in range(0, n, args.batch_size)
                ],
                args.repeats,
            )
            rows.append((f"JPEG q{quality}", sum(len(b) for b in blobs) / n, n / t, error))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="timm/resnet18", help="bob backbone name, random weights (default timm/resnet18)"
    )
    p.add_argument("--split", default="test", help="jpeg-folder split to read (default test: 500 images)")
    p.add_argument(
        "--root", type=Path, default=None, help="data root (default $BOB_DATA_ROOT or ~/.cache/bob/data)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--workers", type=int, default=None, help="loader workers for bob and the user loop (default bob's)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed passes per loop (median; default 3)")
    p.add_argument("--pipelines", nargs="+", default=["pil", "tensor"], choices=["pil", "tensor"])
    p.add_argument("--family-models", nargs="+", default=list(FAMILY_MODELS))
    p.add_argument(
        "--diff-images", type=int, default=64, help="images for the feature differences (default 64)"
    )
    p.add_argument("--fp16", action="store_true", help="on CUDA: compare fp16 instead of bf16")
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="throughput precision"
    )
    p.add_argument("--channels-last", action="store_true", help="throughput with channels_last")
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "diff", "storage"])
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("BOB_OFFLINE", "1")
    from bob.backbones import resolve_backbone
    from bob.data import default_data_root, load_split
    from bob.features import default_num_workers

    args.workers = default_num_workers() if args.workers is None else args.workers
    root = args.root or default_data_root()
    split = load_split("jpeg-folder", args.split, root=root)
    folder = Path(split.root)
    torch.manual_seed(0)
    backbone = resolve_backbone(args.model, "random", seed=0).build().eval().to(torch.device(args.device))
    cfg = backbone.data_config
    print(
        f"python {platform.python_version()}  torch {torch.__version__}  cpu cores {cpu_count()}  "
        f"torch threads {torch.get_num_threads()}  device {args.device}"
    )
    print(
        f"{args.model} (random weights) · {len(split)} JPEGs in {folder} · {cfg.input_size} px "
        f"(resize {cfg.resize_size}, {cfg.interpolation}) · batch {args.batch_size} · workers {args.workers} "
        f"· repeats {args.repeats} · {args.precision}{' channels_last' if args.channels_last else ''}"
    )
    ok = True
    if "throughput" not in args.skip:
        print()
        head = (
            f"{'pipeline':<8} {'user':>7} {'bob':>7} {'decode':>7} {'forward':>7} {'serial':>7} "
            f"{'bob/user':>8} {'bob/serial':>10} {'others':>6}"
        )
        print(head + "\n" + "-" * len(head))
        for pipeline, r in throughput(backbone, folder, split, args).items():
            print(
                f"{pipeline:<8} {r['user']:>7.1f} {r['bob']:>7.1f} {r['decode']:>7.1f} {r['forward']:>7.1f} "
                f"{r['serial']:>7.1f} {r['vs_user']:>8.3f} {r['vs_serial']:>10.3f} {describe_foreign(r['others']):>6}"
            )
            if r["others"] > BUSY_THRESHOLD:
                print(f"  warning: other processes kept {r['others']:.2f} cores busy; timings are unreliable")
            if pipeline == "pil":
                ok = r["vs_user"] >= 1.0 and r["vs_serial"] >= 0.9
        print(
            f"(images/s; targets bob/user >= 1.0 and bob/serial >= 0.9 for pil: {'PASS' if ok else 'FAIL'})"
        )
    if "diff" not in args.skip:
        print()
        print(f"{'model':<36} {'comparison':<28} {'cos min':>8} {'cos mean':>9} {'rel L2 max':>10}")
        for name, what, d in differences(split, args):
            print(f"{name:<36} {what:<28} {d['cos_min']:>8.5f} {d['cos_mean']:>9.6f} {d['rel_max']:>10.4f}")
    if "storage" not in args.skip:
        print()
        print(f"{'geometry cache format':<22} {'KB/image':>8} {'read img/s':>10} {'mean |Δpixel|':>13}")
        for what, size, speed, error in storage(split, cfg, args):
            print(f"{what:<22} {size / 1024:>8.1f} {speed:>10.0f} {error:>13.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
