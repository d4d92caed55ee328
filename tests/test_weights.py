"""Weights: the search path, checksum verification, and fast, explicit failure when a file is missing."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest

from bob.backbones import resolve_backbone
from bob.errors import UsageError, WeightsError
from bob.weights import WeightsRequest, WeightsSource, resolve_file, sha256_file, verify_file

MOBILENET = "mobilenet_v2-b0353104.pth"


def test_mirror_file_is_found_and_verified(weights_dir, monkeypatch):
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(weights_dir))
    ref = resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    assert ref.weights.path == str(weights_dir / MOBILENET)
    assert ref.weights.source == f"url:https://download.pytorch.org/models/{MOBILENET}"
    assert ref.weights.fingerprint() == f"sha256:{ref.weights.sha256}"


def test_wrong_sha256_is_refused_and_left_untouched(tmp_path, weights_dir, monkeypatch):
    bad_dir = tmp_path / "mirror"
    bad_dir.mkdir()
    bad = bad_dir / MOBILENET
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", f"{bad_dir}:{weights_dir}")
    with pytest.raises(WeightsError, match="Checksum mismatch") as info:
        resolve_backbone("torchvision/mobilenet_v2", weights="pretrained")
    assert str(bad) in str(info.value)
    assert bad.read_bytes() == b"not a checkpoint"


def test_sha256sums_manifest_is_checked(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  model.safetensors\n")
    assert verify_file(path) == (digest, "sha256")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  model.safetensors\n")
    with pytest.raises(WeightsError, match="Checksum mismatch"):
        verify_file(path)


def test_hf_style_mirror_layout(tmp_path, monkeypatch):
    repo = tmp_path / "timm" / "resnet18.a1_in1k"
    repo.mkdir(parents=True)
    (repo / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", str(tmp_path))
    path, source = resolve_file(
        [WeightsSource("hf-hub", "timm/resnet18.a1_in1k/model.safetensors")], "resnet18"
    )
    assert path == repo / "model.safetensors" and source.kind == "hf-hub"


def test_missing_weights_offline_fail_fast_with_what_to_do(monkeypatch):
    monkeypatch.setenv("BOB_WEIGHTS_PATH", "")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        resolve_backbone("timm/resnet18.a1_in1k", weights="pretrained")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "timm/resnet18.a1_in1k/model.safetensors" in message
    assert "--weights random" in message and "BOB_WEIGHTS_PATH" in message and "offline" in message


def test_unreachable_download_is_one_quick_attempt(monkeypatch):
    """Online mode against a closed local port: one attempt, an error naming the file, no retry storm."""
    monkeypatch.setenv("BOB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", "")
    source = WeightsSource("url", "http://127.0.0.1:9/models/tiny-0123abcd.pth")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        resolve_file([source], "tiny")
    assert time.perf_counter() - start < 5
    assert "tiny-0123abcd.pth" in str(info.value) and "Download failed" in str(info.value)


def test_unreachable_hub_fails_before_the_hub_client_retries(monkeypatch):
    monkeypatch.setenv("BOB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("BOB_WEIGHTS_PATH", "")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"cannot reach 127\.0\.0\.1"):
        resolve_file([WeightsSource("hf-hub", "timm/resnet18.a1_in1k/model.safetensors")], "resnet18")
    assert time.perf_counter() - start < 5


def test_weights_request_parsing(tmp_path):
    assert WeightsRequest.parse("random").kind == "random"
    file = tmp_path / "w.pth"
    file.write_bytes(b"")
    assert WeightsRequest.parse(str(file)) == WeightsRequest("file", file.resolve())
    with pytest.raises(UsageError, match="pretrained', 'random' or the path"):
        WeightsRequest.parse("pretrianed")


def test_sha256_is_memoised_but_sees_changes(tmp_path, weights_dir):
    path = tmp_path / MOBILENET
    shutil.copy(weights_dir / MOBILENET, path)
    first = sha256_file(path)
    assert sha256_file(path) == first
    path.write_bytes(b"changed")
    assert sha256_file(path) == hashlib.sha256(b"changed").hexdigest()
