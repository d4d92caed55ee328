"""Video splits, PyAV decoding, and the clip / crop sampling of video evaluation.

A `VideoSplit` is an `ImageSplit` whose samples are videos: `frames(i)` gives all frames of video
`i` as uint8 [T, H, W, 3] (`image(i)` is its middle frame, so image-only code still works). In-memory
clips (`ArrayVideoSplit`, generated data) are fingerprinted by their pixels, files
(`FileVideoSplit`) by relative path, size and label, like `FileSplit`.

Views follow the Kinetics / SlowFast / CVRL conventions:
  - temporal: a clip is `clip_len` frames `stride` apart. Testing takes `num_clips` clips whose
    starts are evenly spaced from the first to the last possible start (`uniform_clip_starts`);
    training draws one start uniformly at random. Videos shorter than a clip loop (TF Model Garden's
    `sample_linspace_sequence` does the same), so every clip has exactly `clip_len` frames.
  - spatial: frames are resized so the short side is the crop size, then `num_crops` square crops
    are taken along the long side (1: centre; 3: left/top, centre, right/bottom — SlowFast's
    `uniform_crop`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bob.data.base import ImageSplit
from bob.errors import UsageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class VideoDecodeError(UsageError):
    """A video file that cannot be opened or decoded."""


@dataclass(frozen=True)
class Views:
    """Test-time views: `clips` temporal clips × `crops` spatial crops (CVRL: 10 × 3)."""

    clips: int
    crops: int

    @classmethod
    def parse(cls, text: str) -> Views:
        match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", text)
        if not match:
            raise UsageError(f"views takes CLIPSxCROPS, e.g. 10x3; got '{text}'.")
        views = cls(int(match.group(1)), int(match.group(2)))
        if views.clips < 1 or views.crops not in (1, 3):
            raise UsageError(f"views needs at least 1 clip and 1 or 3 crops; got '{text}'.")
        return views

    def __str__(self) -> str:
        return f"{self.clips}x{self.crops}"


# ------------------------------------------------------------------------------------------ sampling


def clip_span(clip_len: int, stride: int) -> int:
    return (clip_len - 1) * stride + 1


def uniform_clip_starts(num_frames: int, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """Starts of `num_clips` clips evenly spaced over the video (one clip: the middle one)."""
    last = max(num_frames - clip_span(clip_len, stride), 0)
    if num_clips == 1:
        return np.array([last // 2], np.int64)
    return np.rint(np.linspace(0, last, num_clips)).astype(np.int64)


def random_clip_start(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> int:
    return int(rng.integers(max(num_frames - clip_span(clip_len, stride), 0) + 1))


def clip_frame_indices(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """Frame indices of one clip; a video shorter than the clip loops."""
    return (start + stride * np.arange(clip_len)) % num_frames


def crop_offsets(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of `num_crops` size×size crops of a frame whose short side is `size`."""
    if min(height, width) < size:
        raise ValueError(f"a {height}×{width} frame is smaller than the {size}-pixel crop")
    if num_crops == 1:
        return [((height - size) // 2, (width - size) // 2)]
    if num_crops != 3:
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    if width >= height:
        return [((height - size) // 2, x) for x in (0, (width - size) // 2, width - size)]
    return [(y, (width - size) // 2) for y in (0, (height - size) // 2, height - size)]


# -------------------------------------------------------------------------------------------- decoding


def decode_video(path: Path) -> np.ndarray:
    """All frames of the first video stream, uint8 [T, H, W, 3] RGB (PyAV / FFmpeg)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"Video file {path} has no video stream.")
            stream = container.streams.video[0]
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"Cannot decode video file {path}: {type(err).__name__}: {err}") from err
    if not frames:
        raise VideoDecodeError(f"Video file {path} decoded to no frames.")
    return np.stack(frames)


def probe_video(path: Path) -> None:
    """Open `path` and decode its first frame; raises VideoDecodeError naming the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"Video file {path} has no video stream.")
            next(container.decode(container.streams.video[0]))
    except StopIteration:
        raise VideoDecodeError(f"Video file {path} has no decodable frame.") from None
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"Cannot decode video file {path}: {type(err).__name__}: {err}") from err


# ---------------------------------------------------------------------------------------------- splits


class VideoSplit(ImageSplit):
    """A split of videos; `frames(i)` is video `i` as uint8 [T, H, W, 3]."""

    decodes_files = False  # True where reading a video can fail (files), so it is checked first

    def frames(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        frames = self.frames(index)
        return Image.fromarray(frames[len(frames) // 2], mode="RGB")

    def check_readable(self, progress=None) -> None:
        """Raise before any training if a video cannot be read (in-memory clips always can)."""

    def take(self, indices: np.ndarray, split: str) -> VideoSplit:
        raise NotImplementedError


class ArrayVideoSplit(VideoSplit):
    """Clips held in memory, uint8 [N, T, H, W, 3]."""

    def __init__(self, dataset: str, split: str, classes, clips: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(dataset, split, classes, labels)
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise TypeError(
                f"{dataset}/{split}: clips must be uint8 [N, T, H, W, 3], got {clips.dtype} {clips.shape}"
            )
        if len(clips) != len(self.labels):
            raise ValueError(f"{dataset}/{split}: {len(clips)} clips but {len(self.labels)} labels")
        self.clips = clips

    def frames(self, index: int) -> np.ndarray:
        return self.clips[index]

    def _identity_chunks(self) -> list[bytes]:
        return [str(self.clips.shape).encode(), np.ascontiguousarray(self.clips).tobytes()]

    def take(self, indices: np.ndarray, split: str) -> ArrayVideoSplit:
        indices = np.asarray(indices, np.int64)
        return ArrayVideoSplit(self.dataset, split, self.classes, self.clips[indices], self.labels[indices])


class FileVideoSplit(VideoSplit):
    """Video files under `root`, decoded with PyAV on demand."""

    decodes_files = True

    def __init__(self, dataset: str, split: str, classes, root: Path, paths: list[Path], labels) -> None:
        super().__init__(dataset, split, classes, labels)
        if len(paths) != len(self.labels):
            raise ValueError(f"{dataset}/{split}: {len(paths)} files but {len(self.labels)} labels")
        self.root = Path(root)
        self.paths = [Path(p) for p in paths]

    def frames(self, index: int) -> np.ndarray:
        return decode_video(self.paths[index])

    def check_readable(self, progress=None) -> None:
        for path in self.paths:
            probe_video(path)
            if progress is not None:
                progress.advance(1)

    def _identity_chunks(self) -> list[bytes]:
        return [
            f"{path.relative_to(self.root).as_posix()}\x1f{path.stat().st_size}\x1e".encode()
            for path in self.paths
        ]

    def take(self, indices: np.ndarray, split: str) -> FileVideoSplit:
        indices = np.asarray(indices, np.int64)
        paths = [self.paths[i] for i in indices]
        return FileVideoSplit(self.dataset, split, self.classes, self.root, paths, self.labels[indices])


def require_video_split(split: ImageSplit, task: str) -> VideoSplit:
    if not isinstance(split, VideoSplit):
        raise UsageError(f"{task} needs a video dataset; {split.dataset} is an image dataset.")
    return split
