"""Global importance with bootstrap intervals, method agreement, and the explain family."""

from __future__ import annotations

import numpy as np
import pytest

from scrutiny.audit.attributions.explain import explain, resolve_methods
from scrutiny.audit.attributions.importance import agreement, agreement_matrix, global_importance
from scrutiny.cli import main
from scrutiny.errors import InputError


def test_global_importance_is_mean_absolute_with_an_interval_that_shrinks():
    rng = np.random.default_rng(1)
    small = rng.normal(size=(50, 4)) * [1, 2, 3, 4]
    large = rng.normal(size=(5000, 4)) * [1, 2, 3, 4]
    a = global_importance(small, list("abcd"), seed=0)
    b = global_importance(large, list("abcd"), seed=0)
    np.testing.assert_allclose(a.mean, np.abs(small).mean(axis=0))
    assert np.all(a.low <= a.mean) and np.all(a.mean <= a.high)
    assert np.all(b.high - b.low < (a.high - a.low) / 3)  # ~ 1/sqrt(100) narrower
    assert a.ranked() == [3, 2, 1, 0]
    again = global_importance(small, list("abcd"), seed=0)
    np.testing.assert_array_equal(again.low, a.low)
    # 95% interval of the mean of |N(0, 4²)| (true mean 4·sqrt(2/pi)) covers it
    assert b.low[3] < 4 * np.sqrt(2 / np.pi) < b.high[3]


def test_agreement_identical_reversed_and_top_k():
    a = np.array([[1.0, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    same = agreement(a, -a, k=2)  # signs do not matter: ranks of |attribution|
    np.testing.assert_allclose(same.spearman_per_sample, 1.0)
    assert same.top_k_per_sample.tolist() == [1.0, 1.0]
    reverse = agreement(a, a[:, ::-1], k=2)
    np.testing.assert_allclose(reverse.spearman_per_sample, -1.0)
    assert reverse.top_k_per_sample.tolist() == [0.0, 0.0]
    half = agreement(np.array([[4.0, 3, 2, 1]]), np.array([[4.0, 1, 2, 3]]), k=2)
    assert half.top_k_per_sample.tolist() == [0.5]
    assert half.spearman_per_sample[0] == pytest.approx(0.2)  # 1 - 6·Σd²/(n(n²-1)) = 1 - 6·8/60
    pairs = agreement_matrix({"x": a, "y": a, "z": a})
    assert [p.methods for p in pairs] == [("x", "y"), ("x", "z"), ("y", "z")]


def test_resolve_methods():
    assert resolve_methods(["ig", " lime", "ig"]) == ["integrated_gradients", "lime"]
    with pytest.raises(InputError, match="unknown attribution method 'nope'"):
        resolve_methods(["nope"])


def test_explain_names_features_after_original_columns(trained):
    dataset, result, _ = trained("breast_cancer", "mlp")
    found = explain(result.model, dataset, methods=["ig", "saliency"], samples=30, n_boot=200)
    assert len(found.rows) == 30 and found.rows.max() < len(dataset.test)
    assert list(found.space.names) == dataset.spec.feature_names
    assert found.per_feature["integrated_gradients"].shape == (30, len(dataset.spec.features))
    assert found.importance["saliency"].names == dataset.spec.feature_names
    (pair,) = found.agreements
    assert pair.methods == ("integrated_gradients", "saliency")
    again = explain(result.model, dataset, methods=["ig"], samples=30, n_boot=200)
    np.testing.assert_array_equal(again.rows, found.rows)
    np.testing.assert_array_equal(again.per_feature["integrated_gradients"], found.per_feature["integrated_gradients"])


def test_explain_cli(trained, capsys, monkeypatch):
    from scrutiny import cli

    monkeypatch.setattr(cli.console, "width", 200)  # a wide terminal: no wrapped cells
    dataset, _, path = trained("breast_cancer", "mlp")
    code = main(["explain", str(path), "--data", "breast_cancer", "--method", "ig,kernel_shap", "--samples", "10"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "global importance: integrated_gradients" in out and "kernel_shap" in out
    assert any(name in out for name in dataset.spec.feature_names)
    assert "convergence_delta" in out and "sampling_error" in out and "of the row's largest |attribution|" in out
    code = main(["explain", str(path), "--data", "breast_cancer", "--method", "magic"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: unknown attribution method 'magic'") and len(err.strip().splitlines()) == 1


def test_explain_plots_are_written_atomically(trained, capsys, tmp_path):
    from PIL import Image

    _, _, path = trained("breast_cancer", "mlp")
    target = tmp_path / "figs" / "bc.png"
    code = main(["explain", str(path), "--data", "breast_cancer", "--method", "ig,saliency", "--samples", "8",
                 "--plot", str(target)])
    assert code == 0, capsys.readouterr().err
    written = sorted(p.name for p in target.parent.iterdir())
    assert written == ["bc-agreement.png", "bc.png"]  # no temporary files left
    for name in written:
        with Image.open(target.parent / name) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 200 and pixels.std() > 10  # a drawn figure, not a blank canvas
    code = main(["explain", str(path), "--data", "breast_cancer", "--plot", str(tmp_path / "x.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "--plot" in err and not (tmp_path / "x.txt").exists()


def test_image_heatmaps(load, tmp_path):
    import torch

    from scrutiny.audit import plots
    from scrutiny.models import build_model

    digits = load("digits")
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10).eval()
    found = explain(model, digits, methods=["saliency", "occlusion"], samples=3, n_boot=50)
    figure = plots.heatmap_figure(digits.test.X[found.rows], {m: a.values for m, a in found.attributions.items()})
    assert len(figure.axes) == 3 * 3 + 3  # 3 samples × (input + 2 methods), and a colour bar per row
    assert plots.save_figure(figure, tmp_path / "h.svg").read_text().startswith("<?xml")


def test_explain_with_quality_checks(trained, capsys, monkeypatch):
    from scrutiny import cli

    dataset, result, path = trained("breast_cancer", "mlp")
    found = explain(result.model, dataset, methods=["ig"], samples=12, n_boot=50, quality=True)
    q = found.quality["integrated_gradients"]
    assert q.deletion.deletion_auc.shape == (12,) and q.infidelity.shape == (12,) and q.sensitivity.shape == (12,)
    assert np.all(q.sensitivity > 0)  # IG moves when its input moves
    assert q.randomisation.spearman_per_sample.shape == (12,)
    assert q.deletion.deletion[0] > q.deletion.deletion[-1]  # removing what mattered lowers the probability
    assert explain(result.model, dataset, methods=["ig"], samples=12, n_boot=50).quality is None
    monkeypatch.setattr(cli.console, "width", 200)
    code = main(["explain", str(path), "--data", "breast_cancer", "--method", "ig", "--samples", "12", "--quality"])
    out = capsys.readouterr().out
    assert code == 0 and "explanation quality" in out
    assert ("pass" if q.randomisation.passed else "FAIL") in out
    assert f"{q.deletion.deletion_auc.mean():.3f}" in out


def test_the_importance_intervals_need_at_least_one_resample():
    """attributions.n_boot = 0 was let through and crashed the audit; it is refused in the config."""
    from scrutiny.audit.run.config import load_config
    from scrutiny.errors import InputError

    with pytest.raises(InputError, match=r"^config: 'attributions.n_boot' must be from 1 to 100,000, got 0$"):
        load_config({"attributions": {"n_boot": 0}}, task="tabular", fairness=False)
    assert load_config({"fairness": {"n_boot": 0}}, task="tabular", fairness=True).fairness.n_boot == 0
