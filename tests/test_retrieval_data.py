"""Retrieval datasets: the generated skimage-views set, and revisited Oxford, Copydays and CUB-200 faked on disk."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bob import data
from bob.data.relevance import query_database_judgements
from bob.errors import DatasetNotFoundError, UsageError
from bob.tasks.retrieval.views import PHOTOS, generate_instance_views


def _jpg(path: Path, size=(40, 30), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 128)).save(path)


# --- skimage-views ----------------------------------------------------------------------------------------


def test_skimage_views_are_deterministic_with_queries_before_the_database():
    split = data.load_split("skimage-views", "test")
    n_instances = len(PHOTOS) * 4
    assert data.dataset_info("skimage-views").task_type == "retrieval"
    assert len(split) == 5 * n_instances and split.num_queries == n_instances
    np.testing.assert_array_equal(split.labels[:n_instances], np.arange(n_instances))
    np.testing.assert_array_equal(np.bincount(split.labels[n_instances:]), np.full(n_instances, 4))
    num_queries, judgements = query_database_judgements(split)
    assert num_queries == n_instances and judgements.positives[3].tolist() == [12, 13, 14, 15]
    assert split.images.shape[1:] == (96, 96, 3) and split.images.dtype == np.uint8
    once = generate_instance_views(crops_per_photo=1, views_per_instance=2, size=32, seed=3)
    again = generate_instance_views(crops_per_photo=1, views_per_instance=2, size=32, seed=3)
    other = generate_instance_views(crops_per_photo=1, views_per_instance=2, size=32, seed=4)
    np.testing.assert_array_equal(again[0], once[0])
    assert not np.array_equal(again[0], other[0])
    # views of one instance differ from each other (augmented, not copies)
    assert not np.array_equal(split.images[n_instances], split.images[n_instances + 1])
    assert split.fingerprint == data.load_split("skimage-views", "test").fingerprint
    with pytest.raises(UsageError, match="no split 'query'"):
        data.load_split("skimage-views", "query")


# --- revisited Oxford / Paris -----------------------------------------------------------------------------


def make_roxford(root: Path, name: str = "roxford5k") -> dict:
    folder = root / name
    imlist = [f"db_{i}" for i in range(8)]
    qimlist = ["q_0", "q_1"]
    for i, n in enumerate(imlist):
        _jpg(folder / "jpg" / f"{n}.jpg", value=20 * i)
    for n in qimlist:
        _jpg(folder / "jpg" / f"{n}.jpg", size=(60, 50), value=200)
    gnd = [
        {"bbx": [10, 5, 40, 35], "easy": [0, 1], "hard": [2], "junk": [3]},
        {"bbx": [0, 0, 20, 10], "easy": [4], "hard": [], "junk": [5, 6]},
    ]
    cfg = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(cfg, f)
    return cfg


def test_revisitop_loader_crops_queries_and_reads_the_medium_protocol(tmp_path):
    make_roxford(tmp_path)
    split = data.load_split("roxford5k", "test", root=tmp_path)
    assert len(split) == 10 and split.num_queries == 2
    assert split.image(0).size == (30, 30) and split.image(1).size == (20, 10)  # cropped to their boxes
    assert split.image(2).size == (40, 30)  # database images stay whole
    _, j = query_database_judgements(split)
    assert [p.tolist() for p in j.positives] == [[0, 1, 2], [4]]
    assert [x.tolist() for x in j.junk] == [[3], [5, 6]]
    assert "Medium" in j.definition
    moved = make_roxford(tmp_path / "other")
    moved["gnd"][0]["bbx"] = [0, 0, 30, 30]
    with open(tmp_path / "other" / "roxford5k" / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(moved, f)
    assert data.load_split("roxford5k", "test", root=tmp_path / "other").fingerprint != split.fingerprint


@pytest.mark.parametrize("protocol", [2, 4])
def test_revisitop_ground_truth_with_numpy_arrays_reads_safely(tmp_path, protocol):
    """The released files hold numpy arrays and scalars; the restricted unpickler rebuilds them (and
    nothing else: tests/test_security.py feeds it a payload)."""
    cfg = make_roxford(tmp_path)
    for g in cfg["gnd"]:
        g["bbx"] = np.array(g["bbx"], dtype=np.float64)
        g["easy"], g["hard"] = np.array(g["easy"], dtype=np.int64), np.array(g["hard"], dtype=np.int64)
        g["junk"] = [np.int64(j) for j in g["junk"]]
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(cfg, f, protocol=protocol)
    split = data.load_split("roxford5k", "test", root=tmp_path)
    _, j = query_database_judgements(split)
    assert [p.tolist() for p in j.positives] == [[0, 1, 2], [4]]
    assert split.image(0).size == (30, 30)


def test_revisitop_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"gnd_rparis6k\.pkl"):
        data.load_split("rparis6k", "test", root=tmp_path)
    make_roxford(tmp_path, "rparis6k")
    (tmp_path / "rparis6k" / "jpg" / "db_3.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"db_3\.jpg"):
        data.load_split("rparis6k", "test", root=tmp_path)
    (tmp_path / "rparis6k" / "gnd_rparis6k.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="not a revisitop ground-truth pickle"):
        data.load_split("rparis6k", "test", root=tmp_path)


# --- Copydays ---------------------------------------------------------------------------------------------


def make_copydays(root: Path) -> None:
    folder = root / "copydays"
    for block in ("2000", "2001", "2002"):
        _jpg(folder / "original" / f"{block}00.jpg")
    _jpg(folder / "strong" / "200001.jpg")
    _jpg(folder / "strong" / "200002.jpg")
    _jpg(folder / "strong" / "200101.jpg")
    for quality in ("10", "50"):
        for block in ("2000", "2001"):
            _jpg(folder / "jpegqual" / quality / f"{block}00.jpg")
    _jpg(folder / "crops" / "20" / "200200.jpg")


def test_copydays_groups_copies_by_block(tmp_path):
    make_copydays(tmp_path)
    split = data.load_split("copydays", "test", root=tmp_path)
    assert split.classes == ("2000", "2001", "2002") and split.num_queries == 3
    names = [p.relative_to(split.root).as_posix() for p in split.paths]
    assert names[:3] == ["original/200000.jpg", "original/200100.jpg", "original/200200.jpg"]
    assert len(names) == 3 + 8 and all(not n.startswith("original/") for n in names[3:])
    by_name = dict(zip(names, split.labels.tolist(), strict=True))
    assert by_name["strong/200002.jpg"] == 0 and by_name["strong/200101.jpg"] == 1
    assert by_name["jpegqual/50/200100.jpg"] == 1 and by_name["crops/20/200200.jpg"] == 2
    _, judgements = query_database_judgements(split)
    database = names[3:]
    assert sorted(database[i] for i in judgements.positives[2]) == ["crops/20/200200.jpg"]


def test_copydays_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="original"):
        data.load_split("copydays", "test", root=tmp_path)
    make_copydays(tmp_path)
    _jpg(tmp_path / "copydays" / "strong" / "209901.jpg")
    with pytest.raises(UsageError, match=r"belong to no original.*209901"):
        data.load_split("copydays", "test", root=tmp_path)


# --- CUB-200-2011 -----------------------------------------------------------------------------------------


def make_cub(root: Path, n_classes: int = 3, per_class: int = 6) -> None:
    folder = root / "CUB_200_2011"
    lines = {"images.txt": [], "image_class_labels.txt": [], "classes.txt": [], "train_test_split.txt": []}
    image_id = 1
    for c in range(1, n_classes + 1):
        name = f"{c:03d}.Bird_{c}"
        lines["classes.txt"].append(f"{c} {name}")
        for k in range(per_class):
            rel = f"{name}/Bird_{c}_{k:04d}.jpg"
            _jpg(folder / "images" / rel, value=10 * c)
            lines["images.txt"].append(f"{image_id} {rel}")
            lines["image_class_labels.txt"].append(f"{image_id} {c}")
            lines["train_test_split.txt"].append(f"{image_id} {int(k % 2 == 0)}")
            image_id += 1
    for fname, rows in lines.items():
        (folder / fname).write_text("\n".join(rows) + "\n")


def test_cub_reads_the_official_lists(tmp_path):
    make_cub(tmp_path)
    train = data.load_split("cub200", "train", root=tmp_path)
    test = data.load_split("cub200", "test", root=tmp_path)
    assert (len(train), len(test)) == (9, 9)
    assert train.classes == ("001.Bird_1", "002.Bird_2", "003.Bird_3")
    np.testing.assert_array_equal(np.bincount(test.labels), [3, 3, 3])
    assert train.paths[0].name == "Bird_1_0000.jpg" and test.paths[0].name == "Bird_1_0001.jpg"


def test_cub_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"images\.txt"):
        data.load_split("cub200", "train", root=tmp_path)
    make_cub(tmp_path)
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("1 1\n", "1 one\n", 1).replace("2 1\n", "2\n", 1))
    with pytest.raises(UsageError, match=r"image_class_labels\.txt:2"):
        data.load_split("cub200", "train", root=tmp_path)


def test_retrieval_splits_must_say_where_the_queries_end():
    from bob.data.base import ArraySplit
    from bob.data.relevance import mark_queries

    split = ArraySplit("toy", "test", ["a", "b"], np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]))
    with pytest.raises(UsageError, match="did not say which images are queries"):
        query_database_judgements(split)
    with pytest.raises(UsageError, match="at least one query and one database image"):
        mark_queries(split, 4)
    num_queries, judgements = query_database_judgements(mark_queries(split, 2))
    assert num_queries == 2 and [p.tolist() for p in judgements.positives] == [[0], [1]]
