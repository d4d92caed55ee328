"""No untrusted deserialisation: the source holds no unsafe loader call outside a reasoned allow-list,
and crafted files (a dataset's pickle, a checkpoint, a YAML sweep) never run their payload.

A pickle (and a `torch.load` without `weights_only=True`, a `yaml.load` with a full loader) calls
whatever a file names, so a crafted file in a data root or a downloaded checkpoint runs code the
moment it is read. bob reads such files through safe paths: `bob.data.safe_pickle` (plain data and
numpy arrays only), `torch.load(weights_only=True)` / safetensors, `yaml.safe_load` or the safe
loaders, and JSON. The scan below fails on any new unsafe call; the allow-list says why each
remaining one is safe.
"""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("bob", "backbones", "tasks", "scripts", "bench", "examples", "setup.py")

# Calls that deserialise by calling what the data names, or run text as code.
UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "cPickle.load",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "pd.read_pickle",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "torch.jit.load",
    "eval",
    "exec",
    "os.system",
    "os.popen",
}

# (file, call) -> why it is safe. Every entry must still be found, so the list cannot go stale.
ALLOWED = {
    ("bob/data/registry.py", "yaml.load"): "Loader=_LOADER is yaml's CSafeLoader/SafeLoader: plain data only",
    ("backbones/catalog.py", "yaml.load"): "Loader=loader is yaml's CSafeLoader/SafeLoader: plain data only",
    ("backbones/checkpoints.py", "torch.jit.load"): (
        "OpenAI's CLIP and SSCD's releases are TorchScript archives, which weights_only refuses; torch.jit.load "
        "resolves no Python globals (types come from the archive's own TorchScript, run by torch's "
        "interpreter, not Python) and bob only reads state_dict() from the result"
    ),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(path: Path) -> list[tuple[str, int]]:
    """(call, line) of every unsafe call in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in UNSAFE_CALLS:
            loader = _keyword(node, "Loader")
            if name == "yaml.load" and loader is not None and "Safe" in ast.unparse(loader):
                continue  # yaml.load(..., Loader=yaml.SafeLoader) spelled out
            found.append((name, node.lineno))
        elif name.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(("torch.load without weights_only=True", node.lineno))
        elif name.endswith(("np.load", "numpy.load")) and _is_true(_keyword(node, "allow_pickle")):
            found.append(("np.load with allow_pickle=True", node.lineno))
        if _is_true(_keyword(node, "shell")):
            found.append((f"{name}(shell=True)", node.lineno))
    return found


def _sources() -> list[Path]:
    out = []
    for item in SCANNED:
        path = ROOT / item
        out += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return out


def test_no_unsafe_deserialisation_in_the_source() -> None:
    seen: set[tuple[str, str]] = set()
    problems = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for call, line in unsafe_calls(path):
            if (rel, call) in ALLOWED:
                seen.add((rel, call))
            else:
                problems.append(f"{rel}:{line}: {call}")
    assert not problems, "unsafe deserialisation or code execution:\n" + "\n".join(problems)
    assert seen == set(ALLOWED), f"allow-list entries no longer needed: {set(ALLOWED) - seen}"


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, yaml, subprocess, numpy as np\n"
        "pickle.load(open('f', 'rb'))\n"
        "torch.load('x.pt')\n"
        "torch.load('x.pt', weights_only=False)\n"
        "yaml.load(text)\n"
        "eval('1')\n"
        "subprocess.run('ls', shell=True)\n"
        "np.load('a.npy', allow_pickle=True)\n"
        "model.eval()\n"  # a method call, not the builtin
        "torch.load('x.pt', weights_only=True)\n"
        "yaml.load(text, Loader=yaml.SafeLoader)\n"
    )
    found = [call for call, _ in unsafe_calls(bad)]
    assert found == [
        "pickle.load",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "yaml.load",
        "eval",
        "subprocess.run(shell=True)",
        "np.load with allow_pickle=True",
    ]


# --------------------------------------------------------------------------------- crafted files


class _Payload:
    """Unpickling this runs `touch <marker>`: what a crafted file in a data root would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_revisitop_pickle_does_not_run_its_payload(tmp_path: Path) -> None:
    from bob import data
    from bob.errors import UsageError

    marker = tmp_path / "pwned"
    folder = tmp_path / "roxford5k"
    folder.mkdir()
    cfg = {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1]}], "x": _Payload(marker)}
    (folder / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(cfg))
    with pytest.raises(UsageError, match=r"refusing to unpickle global '(posix|os|nt)\.system'"):
        data.load_split("roxford5k", "test", root=tmp_path)
    assert not marker.exists(), "the payload ran"
    pickle.loads(pickle.dumps(_Payload(marker)))  # the same bytes through pickle.load do run it
    assert marker.exists()


def test_a_crafted_checkpoint_does_not_run_its_payload(tmp_path: Path) -> None:
    import torch

    from bob.backbones.checkpoints import load_state_dict_file
    from bob.errors import WeightsError

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="Cannot read checkpoint"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_a_crafted_sweep_file_cannot_build_python_objects(tmp_path: Path) -> None:
    from bob.sweep.spec import SweepSpecError, load_sweep

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\ngrids: []\n")
    with pytest.raises(SweepSpecError, match="not valid YAML"):
        load_sweep(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_restricted_unpickler_reads_data_and_numpy(protocol: int) -> None:
    from bob.data.safe_pickle import safe_loads

    obj = {
        "names": ["a", "b"],
        "nested": ({"x": 1.5, "y": None, "b": b"\x00\x01"}, True),
        "array": np.arange(6, dtype=np.int64).reshape(2, 3),
        "scalar": np.float64(2.5),
    }
    back = safe_loads(pickle.dumps(obj, protocol=protocol))
    assert back["names"] == ["a", "b"] and back["nested"] == obj["nested"]
    np.testing.assert_array_equal(back["array"], obj["array"])
    assert back["scalar"] == 2.5


@pytest.mark.parametrize("global_", [eval, exec, os.system, getattr, __import__, Path])
def test_the_restricted_unpickler_refuses_every_other_global(global_: object) -> None:
    from bob.data.safe_pickle import safe_loads

    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global"):
        safe_loads(pickle.dumps(global_))


class _Huge:
    def __reduce__(self):
        return (bytes, (10**12,))  # a terabyte of zeros, if the reader obliged


def test_the_restricted_unpickler_allows_empty_bytes_only() -> None:
    from bob.data.safe_pickle import safe_loads

    assert safe_loads(pickle.dumps(np.zeros(0), protocol=2)).size == 0  # an empty buffer: bytes()
    with pytest.raises(pickle.UnpicklingError, match=r"only bytes\(\) is allowed"):
        safe_loads(pickle.dumps(_Huge(), protocol=2))
