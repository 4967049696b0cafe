"""`Detector(path).detect(frames_or_video)`: detections from an exported model, without torch."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pbd_deploy.core.atomic import check_folder, write_json
from pbd_deploy.core.metrics import THUMOS_THRESHOLDS, check_thresholds
from pbd_deploy.core.opentad_post import VideoScores
from pbd_deploy.core.postprocessors import (
    gpu_decode,
    postprocess_from_dict,
    video_detections,
    window_candidates,
)
from pbd_deploy.core.video import (
    decode_resized,
    decode_video,
    resize_indices,
    resized_shape,
    window_starts,
)
from pbd_deploy.core.windows import (
    WindowSpec,
    point_positions,
    points_to_seconds,
    sliding_windows,
    valid_input,
)
from pbd_deploy.errors import PbdError
from pbd_deploy.runtime.artifact import (
    find_onnx_by_hash,
    load_manifest,
    resolve_model_path,
)


class Detection(NamedTuple):
    start_s: float
    end_s: float
    label: str
    score: float

    def to_dict(self) -> dict:
        """ActivityNet results entry: {"label", "segment", "score"}."""
        return {"label": self.label, "segment": [self.start_s, self.end_s], "score": self.score}


class Detector:
    """An exported model (.onnx via onnxruntime, .engine via TensorRT) plus its model.json.

    Args:
        path: model.onnx / model.fp16.onnx / model.int8.onnx / model.engine, or the export
            directory (its model.onnx).
        providers: ONNX Runtime execution providers; default TensorRT > CUDA > CPU.
        threads: ONNX Runtime intra-op threads (0: its default).
        video_scores: a video classifier's scores to fuse with the detections (OpenTAD's
            CUHK results JSON, or a `VideoScores`), for a class-agnostic (1-class) model
            with OpenTAD post-processing (ActivityNet); labels are then its classes.

    The post-processing and tIoU thresholds are the model's (model.json "postprocess" and
    "thresholds"; files without them: ours and THUMOS14's).
    """

    def __init__(
        self, path, providers: list[str] | None = None, threads: int = 0, video_scores=None
    ):
        self.path = resolve_model_path(path)
        self.manifest = load_manifest(self.path)
        self.model_config = self.manifest["model_config"]
        self.class_names = list(self.model_config["class_names"])
        # a class-agnostic model's one class stands for every label (DetectorConfig)
        agnostic = self.model_config.get("class_agnostic", False)
        self.truth_label = self.class_names[0] if agnostic is True else None
        self.spec = WindowSpec.from_model_config(self.model_config)
        self.positions = point_positions(self.spec)  # (N,)
        where = self.path.parent / "model.json"
        self.postprocess = postprocess_from_dict(
            self.manifest.get("postprocess"), f"{where} (postprocess)"
        )
        self.thresholds = check_thresholds(
            self.manifest.get("thresholds", THUMOS_THRESHOLDS), f"{where} (thresholds)"
        )
        if video_scores is not None and not isinstance(video_scores, VideoScores):
            video_scores = VideoScores.load(video_scores)
        if video_scores is not None:
            video_scores.check_detector(len(self.class_names))
        self.video_scores = video_scores
        # OpenTAD's padding mask: the model takes each window's valid head points (model.json
        # "valid_input"); files without it take frames or features only
        self.masked = bool(self.manifest.get("valid_input"))
        self.backend = self._open_backend(providers, threads)
        self._check_io()

    def _open_backend(self, providers, threads):
        if self.path.suffix == ".onnx":
            from pbd_deploy.runtime.ort_backend import OrtBackend

            return OrtBackend(self.path, providers, threads)
        from pbd_deploy.runtime.engine_meta import read_metadata
        from pbd_deploy.runtime.trt_backend import TrtBackend

        source = read_metadata(self.path).get("onnx_sha256", "")
        if find_onnx_by_hash(self.manifest, source) is None:
            raise PbdError(
                f"{self.path} was not built from an ONNX file of {self.path.parent / 'model.json'}"
                "; rebuild it with pbd-deploy build-engine from this export"
            )
        return TrtBackend(self.path)

    def _check_io(self) -> None:
        expected = self.manifest["input"]
        fixed = [d for d in expected["shape"][1:] if isinstance(d, int)]
        actual = [d for d in self.backend.input_shape[1:] if isinstance(d, int) and d > 0]
        masked = getattr(self.backend, "valid_name", None) is not None
        if self.backend.input_name != expected["name"] or fixed != actual or masked != self.masked:
            raise PbdError(
                f"{self.path} has input {self.backend.input_name} {self.backend.input_shape}"
                f"{' and valid' * masked}, but model.json says {expected['name']} "
                f"{expected['shape']}{' and valid' * self.masked}: it comes from another model; "
                "re-export it"
            )

    def predict(self, x: np.ndarray, valid=None) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, N, K) and segments (B, N, 2) in head points for model inputs x (B, ...).

        `valid`: (B,) head points of real input per window, which a masked model (OpenTAD's
        padding mask) masks beyond; default every point. A static-batch model runs in chunks
        of its batch, the last one padded by repetition.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        if valid is None:
            valid = np.full(len(x), self.spec.head_length)
        valid = valid_input(valid)
        step = self.backend.static_batch or len(x)
        scores, segments = [], []
        for i in range(0, len(x), step):
            part, vpart = x[i : i + step], valid[i : i + step]
            n = len(part)
            if n < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - n, axis=0)])
                vpart = np.concatenate([vpart, np.repeat(vpart[-1:], step - n)])
            sc, sg = self.backend.run(part, vpart) if self.masked else self.backend.run(part)
            scores.append(sc[:n])
            segments.append(sg[:n])
        return np.concatenate(scores), np.concatenate(segments)

    def load(self, source, fps: float | None = None) -> tuple[np.ndarray, float]:
        """A video file, uint8 frames (T, H, W, 3) or features (T, C) -> (steps, fps).

        A "resize"-sampling model gets the whole video as `window` frames (OpenTAD's
        indices, `core.video.resize_indices`) at the rate that keeps the video's length; a
        "stride" model every `frame_stride`-th frame at the file's (or `fps`) over the stride.
        """
        spec = self.spec
        resize = spec.sampling == "resize"
        if isinstance(source, (str, Path)):
            if spec.mode == "features":
                raise PbdError("a feature-mode model takes a (T, C) feature array, not a video")
            if resize:
                return decode_resized(source, spec.window, spec.resize)
            return decode_video(source, spec.fps, spec.resize, frame_stride=spec.frame_stride)
        data = np.asarray(source)
        fps = fps or spec.fps
        if not fps:
            raise PbdError("pass fps= with an array input (the model has no fixed rate)")
        if spec.mode == "features":
            if data.ndim != 2 or data.shape[1] != spec.feature_dim:
                raise PbdError(f"expected features (T, {spec.feature_dim}), got {data.shape}")
            return data.astype(np.float32), float(fps)
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8 or not len(data):
            raise PbdError(f"expected uint8 frames (T, H, W, 3), got {data.shape} {data.dtype}")
        if resize:
            picked = data[resize_indices(len(data), spec.window)]
            return resize_frames(picked, spec.resize), spec.window * float(fps) / len(data)
        if spec.sampling == "stride":  # frames 0, k, 2k, ... of the array
            k = spec.frame_stride
            return resize_frames(data[::k], spec.resize), float(fps) / k
        return resize_frames(data, spec.resize), float(fps)

    def detect(
        self,
        source,
        fps: float | None = None,
        duration: float | None = None,
        batch_size: int = 8,
        video_id: str | None = None,
    ) -> list[Detection]:
        """Detections of one video, best first.

        Args:
            source: a video file, uint8 frames (T, H, W, 3) sampled at `fps` (default: the
                model's rate), or features (T, C) for feature-mode models.
            fps: frame rate of an array input.
            duration: clip detections to this many seconds; default the input's length.
                A resized video (sampling "resize") is also mapped to seconds by it.
            batch_size: windows per inference call.
            video_id: the video's entry in `video_scores`; default a video file's name stem.
        """
        fused = self._video_scores(source, video_id)
        data, fps = self.load(source, fps)
        duration = duration if duration is not None else len(data) * self.spec.step_frames / fps
        kernels = getattr(self.backend, "kernels", None) is not None
        kernels = kernels and gpu_decode(self.postprocess)  # the decode kernel: "pbd" only
        # The CUDA path maps points by the sliding-window formula and places windows with
        # `window_starts`: sampling "rate" only ("stride" places them as OpenTAD, host path).
        if kernels and self.spec.mode == "video" and self.spec.sampling == "rate":
            parts = self._gpu_candidates(data, fps, duration, batch_size)
        else:
            parts = self._candidates(data, fps, duration, batch_size, fused)
        segs, scs, labels = video_detections(self.postprocess, parts)
        names = self.video_scores.class_names if fused is not None else self.class_names
        return [
            Detection(float(s), float(e), names[int(k)], float(c))
            for (s, e), c, k in zip(segs.tolist(), scs.tolist(), labels.tolist())
        ]

    def _video_scores(self, source, video_id) -> np.ndarray | None:
        """This video's classifier scores, None without `video_scores`."""
        if self.video_scores is None:
            return None
        if video_id is None and isinstance(source, (str, Path)):
            video_id = Path(source).stem
        if video_id is None:
            raise PbdError("with video scores, pass video_id= (the video's entry) for an array")
        return self.video_scores.of(video_id)

    def _gpu_candidates(self, data, fps, duration, batch_size) -> list:
        """Each window's candidates with the CUDA kernels (TensorRT): the same as
        `_candidates`, but only uint8 frames go to the GPU and only candidates come back."""
        spec, scale = self.spec, self.spec.head_length / self.spec.window
        starts = window_starts(len(data), spec.window, spec.stride)
        step = self.backend.static_batch or batch_size
        parts = []
        for i in range(0, len(starts), step):
            chunks = [data[s : s + spec.window] for s in starts[i : i + step]]
            windows = [(s, len(c) * scale) for s, c in zip(starts[i : i + step], chunks)]
            parts += self.backend.run_windows(
                chunks, windows, spec, fps, duration, self.postprocess
            )
        return parts

    def _candidates(self, data, fps, duration, batch_size, fused=None) -> list:
        """Each window's candidates: inputs normalised on the CPU, outputs decoded in numpy."""
        # Lazily, one batch at a time: a real-size window (768 frames at 160x160) is 236 MB.
        windows = sliding_windows(data, self.spec)
        parts = []
        while batch := list(itertools.islice(windows, batch_size)):
            scores, segments = self.predict(np.stack([w[1] for w in batch]), [w[2] for w in batch])
            for (start, _, valid), sc, sg in zip(batch, scores, segments):
                to_sec = lambda p, s=start: points_to_seconds(p, s, fps, self.spec, duration)  # noqa: E731
                parts.append(
                    window_candidates(
                        self.postprocess, sc, sg, self.positions, valid, to_sec, duration, fused
                    )
                )
        return parts


def resize_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 so the short side is `short_side`, with FFmpeg's scaler.

    The same swscale the video decoder uses, so arrays and files of the same frames give
    the same model inputs up to colour conversion.
    """
    _, h, w, _ = frames.shape
    if min(h, w) == short_side:
        return frames
    import av

    height, width = resized_shape(h, w, short_side)
    return np.stack(
        [
            av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").to_ndarray(
                width=width, height=height, format="rgb24"
            )
            for f in frames
        ]
    )


def detect_file(model, video, json_out=None, video_scores=None) -> list[Detection]:
    """`pbd-deploy infer`: detections of a video file, optionally saved as JSON (atomically).

    `video_scores`: a classifier scores file to fuse (`Detector`); the video's entry is its
    file name stem.
    """
    if json_out:
        check_folder(json_out, "--json")
    detections = Detector(model, video_scores=video_scores).detect(video)
    if json_out:
        rows = [d._asdict() for d in detections]
        write_json(json_out, {"video": str(video), "detections": rows}, indent=1)
    return detections
