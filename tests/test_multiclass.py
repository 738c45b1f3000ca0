"""A user table whose label has more than two classes, end to end: `scrutiny train`, `scrutiny
audit` and `scrutiny report` on a synthetic three-species table, each figure checked against a
reference computed here from the raw CSV and the run's stored predictions (pandas, scikit-learn,
the model run by hand), and the spec's favourable class set through its round trips and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix, recall_score
from sklearn.model_selection import train_test_split

from scrutiny.cli import main
from scrutiny.errors import DataError, InputError
from scrutiny.models import load_table
from scrutiny.models.spec import DatasetSpec, Feature

SPECIES = np.array(["Gentoo", "Adelie", "Chinstrap"])   # not in sorted order: the classes are sorted
CLASSES = ("Adelie", "Chinstrap", "Gentoo")
FAVOURABLE = ["Gentoo", "Adelie"]                         # listed out of order on purpose
FAVOURABLE_INDICES = (0, 2)

SPEC = """
label = "species"
favourable = ["Gentoo", "Adelie"]
drop = ["tag"]

[protected]
sex = ["male"]
island = { reference = "Biscoe" }
"""

CONFIG = """
seed = 0

[attributions]
samples = 10
quality_samples = 3
n_boot = 50

[robustness]
samples = 60
steps = 10
queries = 100
detector = false

[fairness]
n_boot = 50
"""


def make_table(n: int = 480, seed: int = 0) -> pd.DataFrame:
    """Three species from two measurements and an island, with a small lean by sex."""
    rng = np.random.default_rng(seed)
    bill, flipper = rng.normal(size=(2, n))
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n)
    sex = rng.choice(["female", "male"], n)
    scores = np.column_stack([2.5 * bill, 2.5 * flipper + (island == "Dream"), -2 * bill - 2 * flipper + 0.6 * (sex == "male")])
    species = SPECIES[(scores + rng.gumbel(scale=0.4, size=scores.shape)).argmax(axis=1)]
    return pd.DataFrame({"tag": np.arange(n), "bill": bill.round(3), "flipper": flipper.round(3), "island": island,
                         "sex": sex, "species": species})


def write(folder, frame: pd.DataFrame, spec: str = SPEC):
    folder.mkdir(parents=True, exist_ok=True)
    data, spec_path = folder / "penguins.csv", folder / "penguins.toml"
    frame.to_csv(data, index=False)
    spec_path.write_text(spec)
    return data, spec_path


def raw_split(frame: pd.DataFrame):
    """The stratified split load_table makes (test_size 0.25, seed 0), redone with scikit-learn."""
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["species"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A checkpoint trained by `scrutiny train`, audited by `scrutiny audit`, rendered by `scrutiny report`."""
    folder = tmp_path_factory.mktemp("penguins")
    frame = make_table()
    data, spec = write(folder, frame)
    (folder / "audit.toml").write_text(CONFIG)
    ck, run = folder / "ck", folder / "run"
    assert main(["train", "--data", str(data), "--spec", str(spec), "--out", str(ck), "--epochs", "40",
                 "--device", "cpu"]) == 0
    code = main(["audit", str(ck), "--data", str(data), "--spec", str(spec), "--config", str(folder / "audit.toml"),
                 "--out", str(run), "--device", "cpu"])
    assert code in (0, 1)
    assert main(["report", str(run), "--format", "md"]) == 0
    from scrutiny.audit.run.run_folder import load_run
    from scrutiny.models import load_model

    dataset = load_table(data, spec)
    return {"frame": frame, "dataset": dataset, "run": load_run(run), "ck": ck, "path": run, "data": data,
            "spec": spec, "loaded": load_model(ck, dataset=dataset)}


# ---------------------------------------------------------------- the data set


def test_classes_are_the_sorted_values_and_the_favourable_set_their_indices(tmp_path):
    frame = make_table()
    dataset = load_table(*write(tmp_path, frame))
    spec = dataset.spec
    assert spec.classes == CLASSES and spec.n_classes == 3 and not spec.is_binary
    assert spec.favourable_classes == ("Adelie", "Gentoo") and spec.favourable_indices == FAVOURABLE_INDICES
    assert spec.favourable_label is None
    train, test = raw_split(frame)
    for split, raw in ((dataset.train, train), (dataset.test, test)):
        assert split.y.tolist() == [CLASSES.index(v) for v in raw["species"]]
        assert split.X["bill"].tolist() == raw["bill"].tolist()  # the same rows, in the same order
    # stratified for three classes: each split holds every class in the table's proportions
    counts = frame["species"].value_counts()
    for cls, count in counts.items():
        assert abs((test["species"] == cls).sum() - 0.25 * count) <= 1


def test_spec_round_trip_keeps_the_favourable_set(audited):
    spec = audited["dataset"].spec
    document = spec.to_dict()
    assert document["favourable_classes"] == ["Adelie", "Gentoo"]
    assert DatasetSpec.from_dict(json.loads(json.dumps(document))) == spec
    manifest = json.loads((audited["ck"] / "manifest.json").read_text())
    assert DatasetSpec.from_dict(manifest["dataset"]["spec"]).favourable_indices == FAVOURABLE_INDICES
    assert audited["loaded"].spec == spec


def test_a_binary_spec_is_written_as_before(tmp_path):
    """Two label values keep the binary convention whether favourable is a value or a one-item
    list, and their spec writes no favourable_classes key (manifests stay as they were)."""
    from scrutiny.models.datasets import ADULT_SPEC

    frame = make_table().assign(species=lambda f: np.where(f["species"] == "Adelie", "Adelie", "other"))
    one = load_table(*write(tmp_path / "a", frame, SPEC.replace('["Gentoo", "Adelie"]', '"Adelie"')))
    listed = load_table(*write(tmp_path / "b", frame, SPEC.replace('["Gentoo", "Adelie"]', '["Adelie"]')))
    assert one.spec == listed.spec and one.spec.classes == ("other", "Adelie") and one.spec.favourable_indices == (1,)
    assert one.spec.favourable_label == "Adelie" and one.train.y.tolist() == listed.train.y.tolist()
    for spec in (one.spec, ADULT_SPEC):
        assert "favourable_classes" not in spec.to_dict()
    assert ADULT_SPEC.favourable_indices == (1,)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "favourable,match",
    [
        ('"Emperor"', r"penguins\.csv: favourable value 'Emperor' named in .*penguins\.toml is not in label column "
                      r"'species' \(values: "),
        ('["Adelie", "Emperor", "King"]', r"favourable values 'Emperor', 'King' named in .*penguins\.toml are not in "
                                          r"label column 'species'"),
        ('["Adelie", "Chinstrap", "Gentoo"]', r"penguins\.toml: 'favourable' names every value of label column "
                                              r"'species'"),
        ("[]", r"penguins\.toml: 'favourable' must be a label value or a non-empty list"),
    ],
    ids=["absent", "absent-in-list", "every-class", "empty-list"],
)
def test_bad_favourable_set_is_one_line_naming_file_key_and_values(tmp_path, favourable, match):
    data, spec = write(tmp_path, make_table(), SPEC.replace('["Gentoo", "Adelie"]', favourable))
    with pytest.raises(DataError, match=match) as info:
        load_table(data, spec)
    assert "\n" not in str(info.value)


def test_single_valued_label_and_thin_class_are_refused(tmp_path):
    frame = make_table()
    with pytest.raises(DataError, match="label column 'species' has 1 distinct value"):
        load_table(*write(tmp_path / "one", frame.assign(species="Adelie"), SPEC.replace(
            '["Gentoo", "Adelie"]', '"Adelie"')))
    thin = frame.assign(species=np.where(frame.index == 0, "Emperor", frame["species"]))
    with pytest.raises(DataError, match=r"rows are too few for a stratified train/test split: .*1 of 'Emperor'"):
        load_table(*write(tmp_path / "thin", thin))


def test_mitigation_is_refused_for_a_multiclass_table(audited, tmp_path, capsys):
    from scrutiny.audit.fairness.assess import mitigate
    from scrutiny.audit.run.config import config_for

    dataset = audited["dataset"]
    assert "fairness" in config_for(dataset).families  # fairness itself runs, one-vs-rest
    with pytest.raises(InputError, match="'fairness.mitigate': reweighing and equalized odds need a binary label"):
        config_for(dataset, {"fairness": {"mitigate": "sex"}})
    with pytest.raises(InputError, match=r"mitigation \(reweighing, equalized odds\) needs a binary tabular data set .*; this one has 3 classes"):
        mitigate(audited["loaded"].model, dataset, "sex")
    config, out = tmp_path / "mitigate.toml", tmp_path / "run"
    config.write_text(CONFIG + 'mitigate = "sex"\n')
    code = main(["audit", str(audited["ck"]), "--data", str(audited["data"]), "--spec", str(audited["spec"]),
                 "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and err.count("\n") == 0 and "binary label" in err


def test_spec_refuses_a_favourable_set_it_cannot_use():
    features = (Feature("x", "numeric"),)
    with pytest.raises(DataError, match="'favourable_classes' is for a multiclass task"):
        DatasetSpec("t", "tabular", "y", ("no", "yes"), features=features, favourable_classes=("yes",))
    with pytest.raises(DataError, match="'favourable_classes' names 'd', not a class"):
        DatasetSpec("t", "tabular", "y", ("a", "b", "c"), features=features, favourable_classes=("a", "d"))
    document = DatasetSpec("t", "tabular", "y", ("a", "b", "c"), features=features, favourable_classes=("a",)).to_dict()
    with pytest.raises(DataError, match="'favourable_classes' must be a list of class names"):
        DatasetSpec.from_dict({**document, "favourable_classes": "a"})


# ---------------------------------------------------------------- the audit


def predictions(audited):
    stored = audited["run"].arrays("arrays/predictions.npz")
    return stored["y_true"], stored["y_pred"], stored["proba"]


def test_performance_per_class_recall_and_confusion(audited):
    y_true, y_pred, _ = predictions(audited)
    _, test = raw_split(audited["frame"])
    assert y_true.tolist() == [CLASSES.index(v) for v in test["species"]]
    assert set(y_pred) == {0, 1, 2}  # the model predicts every class: per-class figures mean something
    details = audited["run"].details("performance")
    assert details.classes == list(CLASSES)
    by_hand = [float(((y_true == k) & (y_pred == k)).sum() / (y_true == k).sum()) for k in range(3)]
    assert details.recall == pytest.approx(by_hand, abs=1e-12)
    assert details.recall == pytest.approx(recall_score(y_true, y_pred, average=None).tolist(), abs=1e-12)
    assert details.confusion == confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).tolist()
    assert details.roc_auc is None  # two classes only


def test_fairness_is_one_vs_rest_for_the_favourable_set(audited):
    _, y_pred, proba = predictions(audited)
    train, test = raw_split(audited["frame"])
    details = audited["run"].details("fairness")
    assert details.settings["threshold"] == "argmax class in the favourable set {Adelie, Gentoo}"
    favourable = [CLASSES[i] for i in FAVOURABLE_INDICES]
    test = test.assign(selected=np.isin(y_pred, FAVOURABLE_INDICES), truth=test["species"].isin(favourable))
    # LL144 selection rates per category: "predicted class in the favourable set", by pandas
    for attribute in ("sex", "island"):
        expected = test.groupby(attribute)["selected"].agg(["size", "mean"])
        rows = {r.category: r for r in details.impact_ratios if r.attribute == attribute}
        assert sorted(rows) == sorted(expected.index)
        for category, (n, rate) in expected.iterrows():
            assert rows[category].n == n and rows[category].selection_rate == pytest.approx(rate, abs=1e-12)
    # the model comparison of sex: female (compared) against male (privileged)
    sex = next(c for c in details.model if c.attribute == "sex")
    female, male = test[test["sex"] == "female"], test[test["sex"] == "male"]
    rate = lambda rows: rows["selected"].mean()  # noqa: E731
    tpr = lambda rows: rows.loc[rows["truth"], "selected"].mean()  # noqa: E731
    assert (sex.n_unprivileged, sex.n_privileged) == (len(female), len(male))
    assert sex.metrics["statistical_parity_difference"].value == pytest.approx(rate(female) - rate(male), abs=1e-12)
    assert sex.metrics["equal_opportunity_difference"].value == pytest.approx(tpr(female) - tpr(male), abs=1e-12)
    assert sex.per_group["unprivileged"].base_rate == pytest.approx(female["truth"].mean(), abs=1e-12)
    # the data-set bias: the training labels in the favourable set, by group
    data_sex = next(c for c in details.data_bias if c.attribute == "sex")
    truth = train["species"].isin(favourable)
    assert data_sex.metrics["base_rate_unprivileged"].value == pytest.approx(truth[train["sex"] == "female"].mean(),
                                                                             abs=1e-12)
    # the score: the favourable classes' summed probability, scored against its median (LL144)
    score = proba[:, list(FAVOURABLE_INDICES)].astype(np.float64).sum(axis=1)
    assert details.median_score == pytest.approx(np.median(score), abs=1e-6)
    above = pd.Series(score > np.median(score)).groupby(test["sex"]).mean()
    rows = {r.category: r.scoring_rate for r in details.scoring_rates if r.attribute == "sex"}
    assert rows == pytest.approx(above.to_dict(), abs=1e-12)


def test_every_default_method_explains_the_predicted_class(audited):
    details = audited["run"].details("attributions")
    _, y_pred, _ = predictions(audited)
    assert set(details.methods) == {"integrated_gradients", "kernel_shap", "lime"}
    assert details.output == "logit" and details.target == y_pred[details.rows].tolist()
    stored = audited["run"].arrays("arrays/attributions.npz")
    for method in details.methods:
        assert stored[method].shape == (len(details.rows), len(details.features))
        assert np.isfinite(stored[method]).all() and np.abs(stored[method]).sum() > 0
    assert details.adverse_action is None  # adverse-action notices are for a binary decision


def test_kernel_shap_of_the_predicted_class_adds_up(audited):
    from scrutiny.audit.attributions.feature_space import tabular_space
    from scrutiny.audit.attributions.methods import attribute

    dataset, loaded = audited["dataset"], audited["loaded"]
    model, preprocessor = loaded.model, loaded.preprocessor()
    x_all = preprocessor.transform(dataset.test.X)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_all)).argmax(dim=1).numpy()
    rows = np.concatenate([np.flatnonzero(predicted == k)[:2] for k in range(3)])  # two rows of each class
    x = x_all[rows]
    result = attribute(model, x, method="kernel_shap", space=tabular_space(preprocessor),
                       background=preprocessor.transform(dataset.train.X), seed=0)
    assert result.output == "logit" and result.target.tolist() == predicted[rows].tolist()
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy().astype(np.float64)
        base = model(torch.from_numpy(result.baseline_values)).numpy().astype(np.float64).mean(axis=0)
    change = logits[np.arange(len(rows)), result.target] - base[result.target]
    assert np.abs(change).min() > 0.1  # something to add up to
    assert result.values.sum(axis=1) == pytest.approx(change, abs=1e-4 + 1e-4 * np.abs(change).max())


def test_pgd_lowers_accuracy_within_its_radius(audited):
    from scrutiny.audit.robustness.assess import constraints_for
    from scrutiny.audit.robustness.attacks import perturbation_norm, run_attack

    dataset, loaded = audited["dataset"], audited["loaded"]
    model, preprocessor = loaded.model, loaded.preprocessor()
    x = torch.from_numpy(preprocessor.transform(dataset.test.X))
    y = torch.from_numpy(dataset.test.y)
    constraints, eps = constraints_for(dataset, preprocessor), 0.5
    x_adv = run_attack("pgd", model, x, y, eps, constraints=constraints, steps=20, seed=0)
    assert perturbation_norm(x_adv, x, "linf").max() <= eps + 1e-6
    held = ~constraints.mutable
    assert torch.equal(x_adv[:, torch.from_numpy(held)], x[:, torch.from_numpy(held)])  # island, sex stay
    with torch.no_grad():
        clean, attacked = (model(x).argmax(1) == y).float().mean(), (model(x_adv).argmax(1) == y).float().mean()
    assert clean > 0.7 and attacked < clean - 0.1
    # the audit's own curve: every attack at every radius at or under the clean accuracy
    curve = audited["run"].details("robustness").curve
    assert curve and all(p.robust_accuracy <= p.clean_accuracy + 1e-12 for p in curve)


def test_report_renders_the_classes_and_the_one_vs_rest_comparisons(audited):
    text = (audited["path"] / "report" / "report.md").read_text()
    assert "classes Adelie, Chinstrap, Gentoo" in text
    assert "`fairness.disparate_impact[sex]`" in text and "`performance.balanced_accuracy`" in text


def test_the_readme_penguins_commands_run(tmp_path):
    """README's example multiclass table, as written (fewer epochs, a small audit config): the real
    penguins, whose rows without a sex are dropped and counted, three classes, one-vs-rest fairness."""
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith("scrutiny ") and "examples/penguins.csv" in line]
    train, audit = (shlex.split(line)[1:] for line in lines)
    assert train[0] == "train" and audit[0] == "audit"
    (tmp_path / "audit.toml").write_text(CONFIG)
    here = {str(a): str(root / a) if a.startswith("examples/") else str(tmp_path / a) for a in [*train, *audit]
            if "/" in a}
    assert main([here.get(a, a) for a in train] + ["--epochs", "20"]) == 0
    assert main([here.get(a, a) for a in audit] + ["--config", str(tmp_path / "audit.toml")]) in (0, 1)
    run = tmp_path / audit[audit.index("--out") + 1]
    findings = json.loads((run / "findings.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    raw = pd.read_csv(root / "examples" / "penguins.csv")
    assert findings["subject"]["data"]["classes"] == sorted(raw["species"].unique())
    assert manifest["data"]["missing"] == {"mode": "drop", "dropped_rows": int(raw["sex"].isna().sum())}
    assert len(findings["details"]["performance"]["recall"]) == 3
    assert findings["details"]["fairness"]["settings"]["threshold"].startswith("argmax class in")
