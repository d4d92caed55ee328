"""Where pretrained weights come from, and proof of which file was used.

Resolution order for a checkpoint file, first hit wins:
  1. the weights search path: directories in $BOB_WEIGHTS_PATH (os.pathsep-separated), where a file is
     found by name (or by `<hub repo>/<name>`) — how air-gapped clusters pre-stage weights;
  2. the library's own cache (the torch hub checkpoints dir, the Hugging Face cache);
  3. a download, unless offline ($BOB_OFFLINE=1 or $HF_HUB_OFFLINE=1): one attempt with a short
     timeout, never a retry storm.
Every file is verified before use: against the sha256 prefix torchvision-style names carry
(`mobilenet_v2-b0353104.pth`), against a `SHA256SUMS` manifest in the mirror directory, or against a
catalog hash. Its sha256 is recorded in the run result. A missing file is an error that names the
file and where bob looked; it is never answered by a silent random init.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bob.errors import StorageError, UsageError, WeightsError
from bob.preflight import storage_error

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 15.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class WeightsRequest:
    """What the user asked for: `pretrained`, `random`, or a local checkpoint file."""

    kind: str  # "pretrained" | "random" | "file"
    path: Path | None = None

    @classmethod
    def parse(cls, value: str) -> WeightsRequest:
        if value in ("pretrained", "random"):
            return cls(value)
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError(
                f"--weights must be 'pretrained', 'random' or the path of a checkpoint file; "
                f"'{value}' is none of these (no such file)."
            )
        return cls("file", path.resolve())

    @property
    def label(self) -> str:
        return self.kind if self.path is None else str(self.path)


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights actually used: recorded in every result and part of every feature-cache key."""

    kind: str  # "pretrained" | "random" | "file"
    source: str | None = None  # e.g. "url:https://…/x.pth", "hf-hub:timm/resnet50.a1_in1k/model.safetensors"
    path: str | None = None
    sha256: str | None = None
    verified: str = "none"  # how the file was checked: "sha256", "sha256-prefix", "unverified"
    seed: int | None = None  # random init seed

    def fingerprint(self) -> str:
        if self.sha256:  # a file's (or a user model's state) bytes identify it whatever its kind
            return f"sha256:{self.sha256}"
        return f"random:seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_offline() -> bool:
    """True when downloads must not even be attempted."""
    return any(
        os.environ.get(var, "").lower() in ("1", "true", "yes") for var in ("BOB_OFFLINE", "HF_HUB_OFFLINE")
    )


def search_path() -> list[Path]:
    """The directories of $BOB_WEIGHTS_PATH, in order."""
    raw = os.environ.get("BOB_WEIGHTS_PATH", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def bob_cache_dir() -> Path:
    env = os.environ.get("BOB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bob"


# --------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path, memo: bool = True) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so large checkpoints are hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_file = bob_cache_dir() / "sha256-memo.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_memo(memo_file) if memo else {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo:
        known[key] = digest
        _write_memo(memo_file, known)
    return digest


def _read_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_memo(path: Path, memo: dict[str, str]) -> None:
    try:
        atomic_write_text(path, json.dumps(memo))
    except StorageError:  # a read-only or full cache only costs a re-hash next time
        log.debug("could not write %s", path)


def default_file_mode() -> int:
    """The mode `open()` would give a new file (0o666 minus the umask); `mkstemp` files are 0o600,
    which would hide results in a shared folder from everyone else."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str, what: str = "file") -> None:
    """Write via a temp file in the same directory and rename: readers never see a torn file.

    A write the file system refuses (disk full, read-only, permission denied, a file where a folder
    should be) removes the temp file and raises StorageError naming `what`, the path and the cause."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise storage_error(what, path, err) from err
        raise


def _manifest_hash(path: Path) -> str | None:
    """The sha256 a `SHA256SUMS` file beside (or one level above) `path` records for it, if any."""
    for directory in (path.parent, path.parent.parent):
        manifest = directory / "SHA256SUMS"
        if not manifest.is_file():
            continue
        rel = os.path.relpath(path, directory)
        for line in manifest.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == rel:
                return parts[0].lower()
    return None


def verify_file(path: Path, expected_sha256: str | None = None, name: str | None = None) -> tuple[str, str]:
    """Hash `path` and check it against every expectation available. Returns (sha256, how verified).

    `name` is the file's real name when `path` is a temporary download (it may carry a hash prefix).
    """
    digest = sha256_file(path, memo=name is None)  # temporary downloads are hashed once, not memoised
    checks: list[tuple[str, str]] = []
    if expected_sha256:
        checks.append(("sha256", expected_sha256.lower()))
    manifest = _manifest_hash(path)
    if manifest:
        checks.append(("sha256", manifest))
    name_match = _HASH_IN_NAME.search(name or path.name)
    if name_match:
        checks.append(("sha256-prefix", name_match.group(1)))
    for how, expected in checks:
        if not digest.startswith(expected):
            raise WeightsError(
                f"Checksum mismatch for weights file {path}: expected sha256 "
                f"{'starting with ' if how == 'sha256-prefix' else ''}{expected}, got {digest}. "
                "The file is corrupt, truncated or not the checkpoint it claims to be. It was not loaded; "
                "replace it with the original file (or delete it so it can be downloaded again)."
            )
    return digest, (checks[0][0] if checks else "unverified")


# ------------------------------------------------------------------------------------------ resolution


@dataclass(frozen=True)
class WeightsSource:
    """One place a checkpoint can come from: a URL or a Hugging Face hub file."""

    kind: str  # "url" | "hf-hub"
    location: str  # URL, or "<repo_id>/<filename>"
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.location.rsplit("/", 1)[-1]

    @property
    def mirror_names(self) -> list[str]:
        """Relative names a mirror directory may hold this file under."""
        if self.kind == "hf-hub":
            return [self.location, self.location.replace("/", "--", 1)]
        return [self.filename]

    def describe(self) -> str:
        return f"{self.kind}:{self.location}"


def find_in_mirrors(source: WeightsSource) -> Path | None:
    for directory in search_path():
        for name in source.mirror_names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def torch_hub_checkpoints_dir() -> Path:
    """Where torch hub (and so torchvision and timm's URL downloads) keeps checkpoint files."""
    hub_dir = os.environ.get("TORCH_HOME")
    if hub_dir:
        base = Path(hub_dir).expanduser() / "hub"
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(cache) / "torch" / "hub"
    return base / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it ($HF_HUB_CACHE, else $HF_HOME/hub,
    else the XDG cache), without importing it."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "hub"


def _torch_hub_checkpoint(filename: str) -> Path:
    return torch_hub_checkpoints_dir() / filename


def find_in_library_cache(source: WeightsSource) -> Path | None:
    if source.kind == "url":
        path = _torch_hub_checkpoint(source.filename)
        return path if path.is_file() else None
    repo_id, filename = source.location.rsplit("/", 1)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def resolve_file(sources: list[WeightsSource], what: str) -> tuple[Path, WeightsSource]:
    """Find (or fetch) the first available file among `sources`; see the module doc for the order."""
    for finder in (find_in_mirrors, find_in_library_cache):
        for source in sources:
            path = finder(source)
            if path is not None:
                return path, source
    errors: list[tuple[WeightsSource, str]] = []
    if not is_offline():
        for source in sources:
            try:
                return download(source), source
            except WeightsError as err:
                errors.append((source, str(err)))
    raise WeightsError(missing_message(sources, what, errors))


def resolve_weights(
    request: WeightsRequest, sources: list[WeightsSource], what: str, seed: int
) -> ResolvedWeights:
    """The weights a request stands for: a verified pretrained file, the user's file, or a seeded init."""
    if request.kind == "pretrained":
        path, source = resolve_file(sources, what)
        sha, how = verify_file(path, source.sha256)  # mirror and cache hits too, not only downloads
        return ResolvedWeights("pretrained", source.describe(), str(path), sha, how)
    if request.kind == "file":
        sha, how = verify_file(request.path)
        return ResolvedWeights("file", "file", str(request.path), sha, how)
    return ResolvedWeights("random", seed=seed)


def _host(source: WeightsSource) -> str:
    if source.kind == "hf-hub":
        return urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).netloc
    return urllib.parse.urlsplit(source.location).netloc or source.location


def missing_message(sources: list[WeightsSource], what: str, errors: list[tuple[WeightsSource, str]]) -> str:
    """The one message for pretrained weights that are nowhere: the files, every place bob looked,
    what each download attempt said (once per host), and what to set."""
    by_repo: dict[str, list[str]] = {}
    wanted = []
    for source in sources:
        if source.kind == "hf-hub":
            by_repo.setdefault(source.location.rsplit("/", 1)[0], []).append(source.filename)
        else:
            wanted.append(f"{source.filename} from {source.location}")
    wanted = [
        f"{' or '.join(files)} from the Hugging Face repo {repo}" for repo, files in by_repo.items()
    ] + wanted
    dirs = ", ".join(str(d) for d in search_path()) or "not set"
    caches = []
    if any(s.kind == "url" for s in sources):
        caches.append(f"the torch hub cache {torch_hub_checkpoints_dir()}")
    if any(s.kind == "hf-hub" for s in sources):
        caches.append(f"the Hugging Face cache {hf_hub_cache_dir()}")
    if is_offline():
        tried = "Downloads were not attempted (offline: BOB_OFFLINE or HF_HUB_OFFLINE is set)."
    else:
        by_host: dict[str, str] = {}
        for source, error in errors:
            by_host.setdefault(_host(source), error.removeprefix(f"{source.location}: "))
        tried = "Download failed: " + "; ".join(f"{host}: {error}" for host, error in by_host.items()) + "."
    mirror_as = " or ".join(dict.fromkeys(s.mirror_names[0] for s in sources))
    return (
        f"Pretrained weights for {what} are not available. bob looked for {', and '.join(wanted)}, "
        f"in BOB_WEIGHTS_PATH ({dirs}) and in {' and '.join(caches)}. {tried} "
        f"To fix: put the file in a directory on BOB_WEIGHTS_PATH (as <dir>/{mirror_as}) or in that cache; "
        "on a machine without internet also set HF_HUB_OFFLINE=1 so no download is tried; or pass a "
        "checkpoint file with --weights PATH (-w PATH), or --weights random for a random-init baseline."
    )


def download(source: WeightsSource) -> Path:
    """One download attempt with a short timeout into the library's standard cache."""
    # http.client, ssl and email come with urllib.request: `bob ls` imports this module, and only
    # a download needs them.
    import urllib.request

    if source.kind == "hf-hub":
        return _download_hf(source)
    dest = _torch_hub_checkpoint(source.filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", source.location, dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with (
            urllib.request.urlopen(source.location, timeout=DOWNLOAD_TIMEOUT_S) as resp,
            os.fdopen(fd, "wb") as f,
        ):
            shutil.copyfileobj(resp, f, length=1 << 20)
        verify_file(Path(tmp), source.sha256, name=dest.name)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise WeightsError(f"{source.location}: {getattr(err, 'reason', err)}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _download_hf(source: WeightsSource) -> Path:
    repo_id, filename = source.location.rsplit("/", 1)
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    url = f"{endpoint.scheme}://{endpoint.netloc}/{repo_id}/resolve/main/{filename}"
    # huggingface_hub retries an unreachable host with back-off for ~20 s; one TCP connect first
    # makes an offline machine fail in well under a second.
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=DOWNLOAD_TIMEOUT_S).close()
    except OSError as err:
        raise WeightsError(f"{url}: cannot reach {endpoint.hostname} ({err})") from err
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:  # the hub client raises many types; all mean "not available"
        raise WeightsError(f"{url}: {err}") from err
