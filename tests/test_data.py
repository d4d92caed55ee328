"""The dataset layer: embedded, generated and real (faked on disk) datasets, errors and the catalog."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob import data
from bob.data import embedded, real, shapes
from bob.data.base import ArraySplit, DatasetInfo
from bob.errors import DatasetNotFoundError, UnknownNameError, UsageError

HAS_ANIMAL_MNIST = importlib.util.find_spec("animal_mnist") is not None
needs_animal_mnist = pytest.mark.skipif(not HAS_ANIMAL_MNIST, reason="animal-mnist is not installed")


def _rows(split: ArraySplit) -> list[tuple[bytes, int]]:
    return [(img.tobytes(), int(lab)) for img, lab in zip(split.images, split.labels, strict=True)]


def _check_partition(
    train: ArraySplit, test: ArraySplit, n_total: int, test_fraction: float, slack: int = 1
) -> None:
    """Train and test together are the whole set, and every class is split by `test_fraction` (± slack)."""
    assert len(train) + len(test) == n_total
    assert train.fingerprint != test.fingerprint
    train_counts = np.bincount(train.labels, minlength=len(train.classes))
    test_counts = np.bincount(test.labels, minlength=len(test.classes))
    expected = test_fraction * (train_counts + test_counts)
    assert np.all(np.abs(test_counts - expected) <= slack)


# --- embedded -------------------------------------------------------------------------------------------


def test_digits_splits() -> None:
    train, test = data.load_split("digits", "train"), data.load_split("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.images.dtype == np.uint8
    assert train.images.shape[1:] == (8, 8)
    assert train.labels.dtype == np.int64
    assert set(np.unique(train.labels)) == set(range(10))
    assert train.classes == tuple("0123456789")
    assert train.images.max() == 255
    assert train.images.min() == 0
    image = train.image(0)
    assert image.mode == "RGB"
    assert image.size == (8, 8)
    _check_partition(train, test, 1797, 0.25)

    from sklearn.datasets import load_digits

    full = load_digits()
    expected = np.rint(full.images * 255 / 16).astype(np.uint8)
    full_rows = sorted((img.tobytes(), int(lab)) for img, lab in zip(expected, full.target, strict=True))
    assert sorted(_rows(train) + _rows(test)) == full_rows  # a partition: every sample exactly once


def test_digits_fingerprint_is_stable() -> None:
    first = data.load_split("digits", "test").fingerprint
    assert data.load_split("digits", "test").fingerprint == first
    assert data.load_split("digits", "train").fingerprint != first


@needs_animal_mnist
def test_animal_mnist_splits() -> None:
    train, test = data.load_split("animal-mnist", "train"), data.load_split("animal-mnist", "test")
    assert (len(train), len(test)) == (8008, 1992)  # duplicate pairs stay on one side
    assert train.images.dtype == np.uint8
    assert train.images.shape[1:] == (28, 28)
    assert train.classes == embedded.ANIMAL_MNIST_CLASSES
    assert len(train.classes) == 10
    assert np.all(np.bincount(train.labels) + np.bincount(test.labels) == 1000)
    _check_partition(train, test, 10000, 0.2, slack=6)
    assert not set(_rows(train)) & set(_rows(test))  # the set has exact duplicates: none may leak
    assert data.load_split("animal-mnist", "train").fingerprint == train.fingerprint


@needs_animal_mnist
def test_animal_mnist_sha256_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "Animal_MNIST"
    shutil.copytree(embedded._animal_mnist_dir(), copy)
    with open(copy / "animal_label_version_3.gz", "ab") as f:
        f.write(b"tampered")
    monkeypatch.setattr(embedded, "_animal_mnist_dir", lambda: copy)

    def must_not_run(raw: bytes) -> np.ndarray:
        raise AssertionError("unpickled a file whose checksum did not match")

    monkeypatch.setattr(embedded, "safe_unpickle_array", must_not_run)
    with pytest.raises(DatasetNotFoundError, match="sha256") as err:
        data.load_split("animal-mnist", "train")
    assert "refuses to unpickle" in str(err.value)
    assert "animal_label_version_3.gz" in str(err.value)


def test_animal_mnist_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "animal_mnist", None)  # makes the import fail
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_split("animal-mnist", "test")
    assert "pip install --no-deps animal-mnist==0.4" in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_globals() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle global '\w+\.system'"):
        embedded.safe_unpickle_array(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="expected a pickled numpy array"):
        embedded.safe_unpickle_array(pickle.dumps({"a": 1}))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_arrays(protocol: int) -> None:
    array = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    np.testing.assert_array_equal(embedded.safe_unpickle_array(pickle.dumps(array, protocol=protocol)), array)


def test_leak_free_partition_keeps_duplicates_together() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(60, 4, 4), dtype=np.uint8)
    images[30:40] = images[0:10]  # ten duplicate pairs
    labels = np.arange(60) % 3
    labels[30:40] = labels[0:10]
    rest, held = embedded.leak_free_partition(images, labels, 0.25, seed=1)
    assert sorted(np.concatenate([rest, held]).tolist()) == list(range(60))
    held_set = set(held.tolist())
    assert all((i in held_set) == (i + 30 in held_set) for i in range(10))


# --- shapes ---------------------------------------------------------------------------------------------


def test_shapes_are_deterministic() -> None:
    a, la = shapes.generate_shapes(40, seed=3)
    b, lb = shapes.generate_shapes(40, seed=3)
    c, _ = shapes.generate_shapes(40, seed=4)
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(la, lb)
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("domain", shapes.DOMAINS)
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_every_domain(domain: str, size: int) -> None:
    images, labels = shapes.generate_shapes(30, size=size, domain=domain, seed=1)
    assert images.shape == (30, size, size, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.min() >= 0
    assert labels.max() < 10
    assert images.std() > 10  # something was drawn


def test_shapes_labels_are_balanced_and_respect_n_classes() -> None:
    _, labels = shapes.generate_shapes(300, n_classes=3, seed=2)
    assert np.array_equal(np.bincount(labels), [100, 100, 100])


def test_shapes_unknown_domain_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match="plain, texture, cartoon, sketch, noise"):
        shapes.generate_shapes(2, domain="photo")


@pytest.mark.parametrize(("domain", "background"), [("plain", 0), ("sketch", 255)])
def test_shapes_stay_inside_the_image(domain: str, background: int) -> None:
    images, _ = shapes.generate_shapes(300, domain=domain, seed=5)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert np.all(border == background)


def _centre_pixel(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image.max(axis=2))
    return image[(ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2]


def test_ring_is_a_true_ring_and_circle_is_filled() -> None:
    images, labels = shapes.generate_shapes(200, seed=6)
    ring, circle = shapes.SHAPE_CLASSES.index("ring"), shapes.SHAPE_CLASSES.index("circle")
    assert all(_centre_pixel(img).max() == 0 for img in images[labels == ring])
    assert all(_centre_pixel(img).max() > 0 for img in images[labels == circle])


def test_square_and_diamond_outlines_differ() -> None:
    """The diamond is a much narrower rhombus than the square, not a rotated copy of it."""
    shape = shapes._UNIT_SHAPES

    def area(p: np.ndarray) -> float:
        return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))

    assert area(shape["diamond"][0]) < 0.6 * area(shape["square"][0])


def test_shapes_catalog_splits_differ() -> None:
    train, test = data.load_split("shapes-sketch", "train"), data.load_split("shapes-sketch", "test")
    assert (len(train), len(test)) == (2000, 1000)
    assert train.classes == shapes.SHAPE_CLASSES
    assert not {img.tobytes() for img in train.images} & {img.tobytes() for img in test.images}
    assert train.fingerprint != test.fingerprint
    assert data.load_split("shapes-sketch", "test").fingerprint == test.fingerprint
    plain = data.load_split("shapes", "test")
    assert plain.fingerprint != test.fingerprint
    assert plain.image(0).size == (64, 64)


# --- real datasets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "flowers102", "fgvc-aircraft", "dtd", "pets", "food101"]
)
def test_real_missing_root_explains_the_ways_out(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_split(name, "test", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / real.LAYOUTS[name].subdir) in message
    assert "download=true" in message
    assert "root=DIR" in message
    assert "BOB_DATA_ROOT" in message


def test_eurosat_and_imagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="download=true") as err:
        data.load_split("eurosat", "train", root=tmp_path)
    assert str(tmp_path / "eurosat" / "2750") in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="cannot download") as err:
        data.load_split("imagenet", "test", root=tmp_path)
    assert str(tmp_path / "imagenet" / "val") in str(err.value)


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> None:
    """torchvision's CIFAR-10 python layout; pixel (c, y, x) of image i is (10·i + 50·c + y + x) % 256."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        ids = b * per_batch + np.arange(per_batch)
        pixels = np.stack([(10 * i + 50 * c + y + x) % 256 for i in ids]).astype(np.uint8)
        batch = {"data": pixels.reshape(per_batch, -1), "labels": [int(i % 10) for i in ids]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"class{k}" for k in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_fake_cifar10_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="corrupted"):  # torchvision's md5 check still applies
        data.load_split("cifar10", "train", root=tmp_path)

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    train, test = (
        data.load_split("cifar10", "train", root=tmp_path),
        data.load_split("cifar10", "test", root=tmp_path),
    )
    assert (len(train), len(test)) == (20, 4)
    assert train.images.shape == (20, 32, 32, 3)
    assert train.classes[3] == "class3"
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    assert test.image(1).getpixel((3, 2)) == ((210 + 5) % 256, (210 + 55) % 256, (210 + 105) % 256)


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), (value, 255 - value, 7)).save(path)


def _tree(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    for split, classes in splits.items():
        for cls, count in classes.items():
            for i in range(count):
                _png(root / split / cls / f"{i}.png", 20 * i)
    return root


def test_imagefolder_tree(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path / "tree", {"train": {"dog": 3, "cat": 2}, "val": {"cat": 1, "dog": 1}, "test": {"dog": 2}}
    )
    (tree / "train" / "cat" / "notes.txt").write_text("not an image")
    train = data.load_split("imagefolder", "train", root=tree)
    assert train.classes == ("cat", "dog")
    assert train.labels.tolist() == [0, 0, 1, 1, 1]
    assert train.image(2).mode == "RGB"
    assert train.image(2).size == (6, 5)
    test = data.load_split("imagefolder", "test", root=tree)
    assert test.classes == ("cat", "dog")
    assert test.labels.tolist() == [1, 1]  # labels agree across splits
    assert len(data.load_split("imagefolder", "val", root=tree)) == 2

    moved = shutil.copytree(tree, tmp_path / "elsewhere")  # fingerprints do not depend on the location
    assert data.load_split("imagefolder", "train", root=moved).fingerprint == train.fingerprint


def test_imagefolder_without_test_uses_val(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    assert len(data.load_split("imagefolder", "test", root=tree)) == 2
    with pytest.raises(UsageError, match="no separate val"):
        data.load_split("imagefolder", "val", root=tree)


def test_imagefolder_errors(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"val": {"a": 1}})
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_split("imagefolder", "train", root=tree)
    assert str(tree / "train") in str(err.value)
    (tree / "val" / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no image") as err:
        data.load_split("imagefolder", "test", root=tree)
    assert str(tree / "val" / "empty") in str(err.value)


def test_fake_eurosat_is_split_80_20(tmp_path: Path) -> None:
    _tree(tmp_path / "eurosat", {"2750": {"Forest": 5, "River": 10}})
    train, test = (
        data.load_split("eurosat", "train", root=tmp_path),
        data.load_split("eurosat", "test", root=tmp_path),
    )
    assert (len(train), len(test)) == (12, 3)
    assert train.classes == ("Forest", "River")
    assert np.bincount(test.labels).tolist() == [1, 2]
    assert train.fingerprint != test.fingerprint


def test_fake_dtd_and_pets(tmp_path: Path) -> None:
    dtd = tmp_path / "dtd" / "dtd"
    for cls in ("banded", "woven"):
        _png(dtd / "images" / cls / f"{cls}_1.jpg", 9)
    (dtd / "labels").mkdir()
    (dtd / "labels" / "test1.txt").write_text("woven/woven_1.jpg\nbanded/banded_1.jpg\n")
    split = data.load_split("dtd", "test", root=tmp_path)
    assert split.classes == ("banded", "woven")
    assert split.labels.tolist() == [1, 0]
    assert split.image(0).size == (6, 5)

    pets = tmp_path / "oxford-iiit-pet"
    for name in ("Abyssinian_1", "beagle_2"):
        _png(pets / "images" / f"{name}.jpg", 3)
    (pets / "annotations").mkdir()
    (pets / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 2 2 1\n")
    split = data.load_split("pets", "train", root=tmp_path)
    assert split.classes == ("Abyssinian", "Beagle")
    assert split.labels.tolist() == [0, 1]


def test_layout_option_lets_entries_share_a_loader(tmp_path: Path) -> None:
    family = DatasetInfo("fgvc-family", "t", "real", 70, ("train", "test"), "s", "l", needs_root=True)
    with pytest.raises(DatasetNotFoundError) as err:
        real.load_torchvision_files(
            family, "test", root=tmp_path, layout="fgvc-aircraft", annotation_level="family"
        )
    assert str(tmp_path / "fgvc-aircraft-2013b") in str(err.value)
    with pytest.raises(UsageError, match="layout="):
        real.load_torchvision_files(family, "test", root=tmp_path)


# --- catalog --------------------------------------------------------------------------------------------


def test_unknown_split_and_unknown_name() -> None:
    with pytest.raises(UsageError, match="no split 'val'"):
        data.load_split("digits", "val")
    with pytest.raises(UnknownNameError) as err:
        data.dataset_info("digit")
    assert "digits" in err.value.suggestions


def test_catalog_entries_are_consistent() -> None:
    for entry in data.DATASETS.entries():
        info = entry.meta["info"]
        assert info.name == entry.name
        assert info.splits
        if info.task_type == "domains":  # a folder of domains: one split per domain, at least two
            assert len(set(info.splits)) == len(info.splits) >= 2
        else:
            assert set(info.splits) <= {"train", "val", "test"}
        assert info.needs_root == (info.kind == "real")
        assert (info.image_size is None) == (info.kind == "real")
        assert info.license
        assert info.source


def test_listing_and_loader_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import bob.data.registry as c\n"
        "from bob.data import dataset_info\n"
        "names = c.DATASETS.names()\n"
        "assert len(names) >= 17, names\n"
        "[dataset_info(n) for n in names]\n"
        "import bob.data.real, bob.data.embedded, bob.data.shapes\n"
        "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'skimage') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_reach_the_loader() -> None:
    assert data.DATASETS.get("shapes-noise").meta["options"] == {"domain": "noise"}
    assert json.dumps(data.dataset_info("fgvc-aircraft").to_dict())  # info is plain, serialisable data


# ----------------------------------------------------------------------------- the YAML registry


def _yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "datasets.yaml"
    path.write_text(text)
    return path


def test_a_yaml_entry_takes_file_defaults_and_resolves_relative_loaders(tmp_path: Path) -> None:
    from bob.data.registry import read_dataset_file

    path = _yaml_file(
        tmp_path,
        "defaults: {task_type: retrieval, splits: [test]}\n"
        "datasets:\n"
        "- {name: a, title: A, kind: real, num_classes: null, loader: '.data:load_a', source: s, license: l,\n"
        "   options: {sizes: [1, 2], nested: {k: [3]}}}\n"
        "- {name: b, title: B, kind: generated, num_classes: 3, splits: [train, test], image_size: 32,\n"
        "   loader: 'x.y:load_b', source: s, license: l}\n",
    )
    (a_name, a_loader, a_info, a_opts), (_, b_loader, b_info, _) = read_dataset_file(path, "bob.tasks.demo")
    assert a_name == "a" and a_loader == "bob.tasks.demo.data:load_a" and b_loader == "x.y:load_b"
    assert a_info.task_type == "retrieval" and a_info.splits == ("test",) and a_info.needs_root
    assert b_info.splits == ("train", "test") and not b_info.needs_root and b_info.image_size == 32
    assert a_opts == {"sizes": (1, 2), "nested": {"k": (3,)}}  # lists reach the loader as tuples


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list\n", "expected a mapping with 'defaults' and 'datasets'"),
        ("datasets:\n- {title: no name}\n", "a mapping with a 'name'"),
        (
            "datasets:\n- {name: a, colour: red, loader: 'm:f'}\n",
            "dataset 'a': unknown fields \\['colour'\\]",
        ),
        (
            "datasets:\n- {name: a, title: A, kind: real, num_classes: 1, splits: [test], source: s, license: l}\n",
            "'loader' must read 'module:function'",
        ),
        ("datasets:\n- {name: a, title: A, loader: 'm:f'}\n", "dataset 'a': .*missing"),
        ("defaults: {shape: round}\ndatasets: []\n", "unknown default fields"),
    ],
)
def test_a_malformed_yaml_entry_names_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    from bob.data.registry import DatasetDefinitionError, read_dataset_file

    path = _yaml_file(tmp_path, text)
    with pytest.raises(DatasetDefinitionError, match=message) as err:
        read_dataset_file(path, "bob.data")
    assert str(path) in str(err.value)


def test_a_dataset_defined_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bob.data import registry
    from bob.registry import Registry

    entry = "- {name: twin, title: T, kind: generated, num_classes: 2, splits: [test], loader: 'm:f', source: s, license: l}\n"
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("datasets:\n" + entry)
    two.write_text("datasets:\n" + entry)
    monkeypatch.setattr(registry, "dataset_files", lambda: [(one, "bob.data"), (two, "bob.data")])
    fresh = Registry("dataset", populate=registry._populate)
    with pytest.raises(registry.DatasetDefinitionError, match=r"two\.yaml: dataset 'twin' is defined twice"):
        fresh.names()


def test_every_shipped_yaml_file_is_found_and_every_loader_resolves() -> None:
    """Each registered dataset's loader imports (a typo in a YAML loader line fails here, not at run time)."""
    from bob.data.registry import dataset_files
    from bob.registry import import_target

    files = {path.name if path.parent.name == "entries" else path.parent.name for path, _ in dataset_files()}
    assert {"classification.yaml", "detection.yaml", "ood", "iqa", "vis"} <= files
    for entry in data.DATASETS.entries():
        assert callable(import_target(entry.target)), entry.name
