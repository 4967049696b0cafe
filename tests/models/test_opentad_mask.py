"""OpenTAD's padding mask: a converted model on a window padded past a short video's end
computes what OpenTAD computed (tests/fixtures/opentad/make_mask_fixture.py ran OpenTAD's
detector with its mask on windows holding 16, 32 or 48 real frames of 64)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pbd_deploy.core.compare import assert_same_detections, rows_from_arrays
from pbd_deploy.core.postprocessors import video_detections, window_candidates
from pbd_deploy.core.windows import WindowSpec, point_positions, points_to_seconds
from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import HeadConfig
from tests.models.test_opentad_fixtures import FIXTURES, TOL, convert, max_diff, normalised_frames

NAMES = ["adatad_global", "adatad_windowed"]
VALID = [16, 32, 48]


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FIXTURES / "mask.safetensors")), json.loads(
        (FIXTURES / "mask.json").read_text()
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("valid", VALID)
def test_masked_head_equals_opentad_at_the_valid_points(name, valid, reference, tmp_path):
    ref, _ = reference
    key = f"{name}_v{valid}"
    model, _, _ = convert(name, tmp_path)
    assert model.config.head.masked  # convert marks OpenTAD models masked
    x = normalised_frames(model, ref[f"{key}_frames"])
    v = torch.tensor([valid])
    with torch.no_grad():
        feats = model.features(x)
        levels = model.head.pyramid(feats, v)
        logits, offsets = model.head(feats, v)
        unmasked, _ = model.head(feats)
    worst_unmasked = 0.0
    for level, (f, c, r) in enumerate(zip(levels, logits, offsets)):
        keep = torch.arange(f.shape[-1]) * 2**level < valid
        assert max_diff(f[..., keep], ref[f"{key}_level{level}_features"][..., keep]) < TOL
        assert (
            max_diff(c.transpose(1, 2)[..., keep], ref[f"{key}_level{level}_logits"][..., keep])
            < TOL
        )
        got = r.transpose(1, 2)[..., keep] / 2**level
        assert max_diff(got, ref[f"{key}_level{level}_offsets"][..., keep]) < TOL
        worst_unmasked = max(worst_unmasked, max_diff(unmasked[level].transpose(1, 2)[..., keep],
                                                      ref[f"{key}_level{level}_logits"][..., keep]))  # fmt: skip
    assert worst_unmasked > 1e-2  # without the mask it is measurably different


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("valid", VALID)
def test_masked_model_gives_opentads_detections(name, valid, reference, tmp_path):
    ref, metas = reference
    key = f"{name}_v{valid}"
    model, _, _ = convert(name, tmp_path)
    post = model.config.post
    spec = WindowSpec.from_model_config(model.config.to_dict())
    with torch.no_grad():
        probs, segments = model.predict(normalised_frames(model, ref[f"{key}_frames"]),
                                        torch.tensor([float(valid)]))  # fmt: skip
    m = metas[key]
    to_sec = lambda p: points_to_seconds(p, 0, m["fps"], spec, m["duration"])  # noqa: E731
    part = window_candidates(post, probs[0].numpy(), segments[0].numpy(), point_positions(spec),
                             valid, to_sec, m["duration"])  # fmt: skip
    segs, scores, labels = video_detections(post, [part])
    expected = [ref[f"{key}_det_{k}"].numpy() for k in ("segments", "scores", "labels")]
    assert len(scores) == len(expected[1]) > 0
    match = assert_same_detections(rows_from_arrays(segs, scores, labels),
                                   rows_from_arrays(*expected), score_tol=1.01e-4,
                                   segment_tol=0.0101, segment_rtol=0.0)  # fmt: skip
    assert len(match.pairs) == len(scores)


@pytest.mark.parametrize("name", NAMES)
def test_full_windows_are_unchanged_bit_for_bit(name, tmp_path):
    model, _, _ = convert(name, tmp_path)
    ref = load_file(str(FIXTURES / f"{name}.safetensors"))
    x = normalised_frames(model, ref["frames"])
    with torch.no_grad():
        plain = model.predict(x)
        full = model.predict(x, torch.tensor([64.0, 64.0]))
    for a, b in zip(plain, full):
        assert max_diff(a, b) < 1e-6
    model.config.head.masked = False  # an unmasked model ignores valid: identical bits
    with torch.no_grad():
        ignored = model.predict(x, torch.tensor([16.0, 16.0]))
    for a, b in zip(plain, ignored):
        assert torch.equal(a, b)


def test_batch_of_windows_masks_each_by_its_own_length(tmp_path):
    model, _, _ = convert("adatad_windowed", tmp_path)
    ref, _ = load_file(str(FIXTURES / "mask.safetensors")), None
    x = torch.cat([normalised_frames(model, ref[f"adatad_windowed_v{v}_frames"]) for v in VALID])
    with torch.no_grad():
        batch = model.predict(x, torch.tensor(VALID, dtype=torch.float32))
        for i, v in enumerate(VALID):
            one = model.predict(x[i : i + 1], torch.tensor([float(v)]))
            for a, b in zip(batch, one):
                assert max_diff(a[i : i + 1], b) < 1e-5


def test_mask_needs_the_opentad_head():
    with pytest.raises(PbdError, match="masked"):
        HeadConfig(masked=True)
    assert not HeadConfig().masked and np.isscalar(TOL)
