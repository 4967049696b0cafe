"""`pbd-deploy eval --thresholds activitynet` and `--save-predictions`, against independent code."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main
from pbd_deploy.core.annotations import ground_truth, load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.eval.inference import predict_split
from pbd_deploy.models.io import load_model
from tests.core.test_metrics import reference_map
from tests.export.helpers import tiny_model_dir

# ActivityNet's protocol: tIoU 0.5:0.05:0.95, written out independently of the package.
ACTIVITYNET = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _noisy_predictions(synth_data, seed=0):
    """Every test and val instance, its bounds moved by a few tenths of its length."""
    rng = np.random.default_rng(seed)
    db = json.loads((synth_data / "annotations.json").read_text())["database"]
    return {
        vid: [
            {
                "label": a["label"],
                "segment": list(
                    np.add(a["segment"], rng.normal(0, 0.15, 2) * np.ptp(a["segment"]))
                ),
                "score": float(rng.random()),
            }
            for a in v["annotations"]
        ]
        for vid, v in db.items()
        if v["subset"] in ("testing", "validation")
    }


def test_activitynet_thresholds_score_like_the_reference(synth_data, tmp_path):
    preds = _noisy_predictions(synth_data)
    (tmp_path / "p.json").write_text(json.dumps({"results": preds}))
    ann = synth_data / "annotations.json"
    saved_path = tmp_path / "saved.json"
    args = ["--thresholds", "activitynet", "--save-predictions", saved_path, "--json"]
    result = run("eval", tmp_path / "p.json", "--annotations", ann, *args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["thresholds"] == pytest.approx(ACTIVITYNET)
    test = load_annotations(ann).split("test")
    scored = {v.video_id: preds[v.video_id] for v in test}
    want, _ = reference_map(ground_truth(test), scored, ACTIVITYNET)
    np.testing.assert_allclose(out["mAP"], want, rtol=0, atol=1e-9)
    assert out["mAP"][0] > out["mAP"][-1]  # the thresholds really differ
    # --save-predictions writes the scored (test-split) predictions in ActivityNet format.
    saved = json.loads(saved_path.read_text())
    assert set(saved) == {"version", "results", "external_data"}
    assert saved["results"] == scored


def test_save_predictions_of_a_model_are_its_detections(synth_data, tmp_path):
    model_dir = tiny_model_dir(tmp_path / "m", synth_data, seed=2)
    out = tmp_path / "preds.json"
    result = run("eval", model_dir, "--data", synth_data, "--save-predictions", out, "--json")
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())["results"]
    model = load_model(model_dir)
    expected = predict_split(model, TadDataset(synth_data, model.config), "test")
    assert len(saved) == 3 and all(len(d) > 0 for d in saved.values())
    # The same code on the same thread count in this process: the very same floats.
    assert saved == expected
    test = load_annotations(synth_data / "annotations.json").split("test")
    want, _ = reference_map(ground_truth(test), saved, [0.3, 0.4, 0.5, 0.6, 0.7])
    np.testing.assert_allclose(json.loads(result.output)["mAP"], want, rtol=0, atol=1e-9)
