"""A user's own CSV or Parquet table described by a TOML spec (``load_table``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from scrutiny.errors import DataError
from scrutiny.models import Feature, load_table

SPEC = """
label = "approved"
favourable = "yes"
categorical = ["zone"]
drop = ["applicant_id"]

[protected]
sex = ["male"]
age = { min = 25 }
"""


def make_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """A table whose label is a function of ``score``: approved == "yes" exactly when score > 0."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n).round(3)
    score[score == 0] = 0.001
    age = rng.integers(18, 70, size=n)
    age[:10] = 25  # the boundary of the privileged group
    age[10:20] = 24
    return pd.DataFrame({
        "applicant_id": np.arange(1000, 1000 + n),
        "score": score,
        "children": rng.integers(0, 5, size=n),
        "region": rng.choice(["north", "south", "east"], size=n),
        "sex": rng.choice(["female", "male"], size=n),
        "age": age,
        "zone": rng.integers(1, 5, size=n),
        "approved": np.where(score > 0, "yes", "no"),
    })


def write(tmp_path, frame: pd.DataFrame, spec: str = SPEC, name: str = "loans", suffix: str = ".csv"):
    data = tmp_path / f"{name}{suffix}"
    if suffix == ".csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_parquet(data, index=False)
    spec_path = tmp_path / f"{name}.toml"
    spec_path.write_text(spec)
    return data, spec_path


@pytest.fixture
def table(tmp_path):
    """(dataset, frame): the standard table loaded from CSV."""
    frame = make_frame()
    data, spec = write(tmp_path, frame)
    return load_table(data, spec), frame


def test_csv_and_parquet_give_identical_data_sets(tmp_path):
    csv, spec = write(tmp_path, make_frame())
    parquet = tmp_path / "loans.parquet"
    pd.read_csv(csv).to_parquet(parquet, index=False)
    a, b = load_table(csv, spec), load_table(parquet, spec)

    def same(spec):
        return dataclasses.replace(spec, extra={}, description="")

    assert same(a.spec) == same(b.spec)
    assert a.spec.extra["source"] == "loans.csv" and b.spec.extra["source"] == "loans.parquet"
    for split in ("train", "test"):
        sa, sb = getattr(a, split), getattr(b, split)
        pd.testing.assert_frame_equal(sa.X, sb.X)
        pd.testing.assert_frame_equal(sa.groups, sb.groups)
        np.testing.assert_array_equal(sa.y, sb.y)
        np.testing.assert_array_equal(a.encode(sa.X), b.encode(sb.X))
    assert a.preprocessor.to_dict() == b.preprocessor.to_dict()
    assert a.sha256 != b.sha256  # hashes of the two files


def test_feature_kinds_are_inferred(table):
    dataset, _ = table
    features = {f.name: f for f in dataset.spec.features}
    assert features == {
        "score": Feature("score", "numeric", integer=False),
        "children": Feature("children", "numeric", integer=True),
        "region": Feature("region", "categorical"),
        "sex": Feature("sex", "binary"),
        "age": Feature("age", "numeric", integer=True),
        "zone": Feature("zone", "categorical"),  # numeric codes, forced by `categorical`
    }
    assert dataset.spec.feature_names == ["score", "children", "region", "sex", "age", "zone"]
    names = dataset.preprocessor.encoded_feature_names
    assert names == ["score", "children", "region=east", "region=north", "region=south", "sex=male", "age",
                     "zone=1", "zone=2", "zone=3", "zone=4"]
    X = dataset.encode(dataset.train.X)
    assert X.shape == (len(dataset.train), len(names))
    # One-hot blocks hold exactly one 1 per row; the binary column is 0/1.
    assert (X[:, 2:5].sum(axis=1) == 1).all() and (X[:, 7:11].sum(axis=1) == 1).all()
    np.testing.assert_array_equal(X[:, 5], (dataset.train.X["sex"] == "male").to_numpy())


def test_numeric_codes_stay_numeric_unless_named_categorical(tmp_path):
    data, spec = write(tmp_path, make_frame(), SPEC.replace('categorical = ["zone"]', ""))
    dataset = load_table(data, spec)
    zone = {f.name: f for f in dataset.spec.features}["zone"]
    assert zone == Feature("zone", "numeric", integer=True)


def test_dropped_columns_are_not_features(table):
    dataset, _ = table
    assert "applicant_id" not in dataset.spec.feature_names
    assert "approved" not in dataset.spec.feature_names
    assert "applicant_id" not in dataset.train.X.columns
    assert not any(n.startswith("applicant_id") for n in dataset.preprocessor.encoded_feature_names)


def test_label_and_favourable_outcome(table):
    dataset, _ = table
    spec = dataset.spec
    assert spec.name == "loans" and spec.task == "tabular" and spec.label == "approved"
    assert spec.classes == ("no", "yes") and spec.favourable_label == "yes"
    for split in (dataset.train, dataset.test):
        # approved == "yes" exactly when score > 0, so y == 1 exactly for those rows.
        np.testing.assert_array_equal(split.y, (split.X["score"] > 0).to_numpy().astype(np.int64))
        assert split.y.dtype == np.int64


def test_favourable_given_as_text_matches_integer_label(tmp_path):
    frame = make_frame()
    frame["approved"] = (frame["score"] > 0).astype(int)
    data, spec = write(tmp_path, frame, SPEC.replace('favourable = "yes"', 'favourable = "1"'))
    dataset = load_table(data, spec)
    assert dataset.spec.favourable_label == 1 and type(dataset.spec.favourable_label) is int
    assert dataset.spec.classes == ("0", "1")
    for split in (dataset.train, dataset.test):
        np.testing.assert_array_equal(split.y, (split.X["score"] > 0).to_numpy().astype(np.int64))


def test_favourable_zero_is_class_one(tmp_path):
    frame = make_frame()
    frame["approved"] = (frame["score"] <= 0).astype(int)  # 0 means approved here
    data, spec = write(tmp_path, frame, SPEC.replace('favourable = "yes"', "favourable = 0"))
    dataset = load_table(data, spec)
    assert dataset.spec.classes == ("1", "0")
    np.testing.assert_array_equal(dataset.train.y, (dataset.train.X["score"] > 0).to_numpy().astype(np.int64))


def test_protected_attributes(table):
    dataset, _ = table
    sex = dataset.spec.protected_attribute("sex")
    age = dataset.spec.protected_attribute("age")
    assert sex.privileged_values == ("male",) and sex.privileged_min is None
    assert age.privileged_min == 25 and age.privileged_values == ()
    for split in (dataset.train, dataset.test):
        assert list(split.groups.columns) == ["sex", "age"]
        np.testing.assert_array_equal(sex.is_privileged(split.groups["sex"]), (split.groups["sex"] == "male").to_numpy())
        np.testing.assert_array_equal(age.is_privileged(split.groups["age"]), (split.groups["age"] >= 25).to_numpy())
    ages = pd.concat([dataset.train.groups["age"], dataset.test.groups["age"]])
    assert age.is_privileged(ages[ages == 25]).all() and not age.is_privileged(ages[ages == 24]).any()
    assert "sex" in dataset.spec.feature_names  # protected columns stay features unless dropped


def test_split_is_stratified_and_seeded(tmp_path):
    frame = make_frame(n=200)
    data, spec = write(tmp_path, frame)
    first, again = load_table(data, spec), load_table(data, spec)
    assert len(first.test) == 50 and len(first.train) == 150
    pd.testing.assert_frame_equal(first.test.X, again.test.X)
    np.testing.assert_array_equal(first.train.y, again.train.y)

    rate = (frame["approved"] == "yes").mean()
    for split in (first.train, first.test):
        assert abs(split.y.mean() - rate) <= 1 / len(split)

    other_spec = tmp_path / "other.toml"
    other_spec.write_text("seed = 1\n" + SPEC)
    other = load_table(data, other_spec)
    assert not first.test.X.equals(other.test.X)
    assert sorted(first.test.X["score"]) != sorted(other.test.X["score"])
    assert other.spec.extra["seed"] == 1

    sized = tmp_path / "sized.toml"
    sized.write_text("test_size = 0.4\n" + SPEC)
    assert len(load_table(data, sized).test) == 80


@pytest.mark.parametrize(
    "spec,match",
    [
        ('colour = "red"\n' + SPEC, "unknown key"),
        (SPEC.replace('label = "approved"', ""), "label"),
        (SPEC.replace('favourable = "yes"', ""), "favourable"),
        ("test_size = 0\n" + SPEC, "test_size"),
        ("test_size = 1\n" + SPEC, "test_size"),
        ("test_size = 1.5\n" + SPEC, "test_size"),
        ('test_size = "big"\n' + SPEC, "test_size"),
        (SPEC + "\n[[", "TOML"),
        ('categorical = "zone"\n' + SPEC.replace('categorical = ["zone"]', ""), "categorical"),
    ],
    ids=["unknown-key", "no-label", "no-favourable", "test-size-0", "test-size-1", "test-size-1.5",
         "test-size-text", "bad-toml", "categorical-not-list"],
)
def test_bad_spec(tmp_path, spec, match):
    data, spec_path = write(tmp_path, make_frame(), spec, name="mine")
    with pytest.raises(DataError, match=match) as info:
        load_table(data, spec_path)
    assert "mine.toml" in str(info.value)


def test_immutable_columns_reach_the_spec(tmp_path):
    data, spec_path = write(tmp_path, make_frame(), 'immutable = ["children", "age", "children"]\n' + SPEC)
    assert load_table(data, spec_path).spec.immutable == ("children", "age")
    data, spec_path = write(tmp_path, make_frame(), SPEC, name="plain")
    assert load_table(data, spec_path).spec.immutable == ()


@pytest.mark.parametrize("immutable, column", [
    ('["salary"]', "salary"),              # no such column
    ('["applicant_id"]', "applicant_id"),  # dropped
    ('["approved"]', "approved"),          # the label
])
def test_immutable_must_name_feature_columns(tmp_path, immutable, column):
    data, spec_path = write(tmp_path, make_frame(), f"immutable = {immutable}\n" + SPEC, name="mine")
    with pytest.raises(DataError) as info:
        load_table(data, spec_path)
    message = str(info.value)
    assert message.startswith(f"{spec_path}: 'immutable' names '{column}', which is not a feature column")
    assert "(features: score, children, region, sex, age, zone)" in message


def test_immutable_must_be_a_list(tmp_path):
    data, spec_path = write(tmp_path, make_frame(), 'immutable = "age"\n' + SPEC, name="mine")
    with pytest.raises(DataError, match="^.*mine.toml: 'immutable' must be a list of column names$"):
        load_table(data, spec_path)


@pytest.mark.parametrize("privileged", ["[]", '"male"', "{ min = \"x\" }", "{ max = 3 }"])
def test_bad_protected_entry(tmp_path, privileged):
    spec = SPEC.replace('sex = ["male"]', f"sex = {privileged}")
    data, spec_path = write(tmp_path, make_frame(), spec)
    with pytest.raises(DataError, match="protected 'sex'"):
        load_table(data, spec_path)


def test_missing_spec_file(tmp_path):
    data, _ = write(tmp_path, make_frame())
    with pytest.raises(DataError, match="nospec.toml"):
        load_table(data, tmp_path / "nospec.toml")


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("empty.csv", "", "empty"),
        ("header.csv", "score,approved\n", "no rows"),
        ("table.txt", "score,approved\n1,yes\n-1,no\n", r"\.csv or \.parquet"),
        ("broken.parquet", "this is not parquet", "cannot be read"),
        ("missing.csv", None, "not found"),
    ],
    ids=["empty", "header-only", "wrong-extension", "corrupt-parquet", "missing"],
)
def test_bad_data_file(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    spec = tmp_path / "spec.toml"
    spec.write_text('label = "approved"\nfavourable = "yes"\n')
    with pytest.raises(DataError, match=match) as info:
        load_table(path, spec)
    assert name in str(info.value)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda f: f.drop(columns="approved"), "label column 'approved' not found"),
        (lambda f: f.assign(approved="yes"), "1 distinct"),
        (lambda f: f.assign(approved=np.where(f["score"] > 0, "Y", "N")), "favourable value 'yes'"),
        (lambda f: f.assign(score=f["score"].where(f.index != 5)), "'score' has 1 missing"),
        (lambda f: f.assign(region=f["region"].where(f.index != 7)), "'region' has 1 missing"),
        (lambda f: f.drop(columns="sex"), "protected column 'sex' not found"),
        (lambda f: f.drop(columns="zone"), "'zone'"),
    ],
    ids=["no-label", "one-label", "favourable-absent", "nan-numeric", "nan-text",
         "protected-absent", "categorical-absent"],
)
def test_bad_columns(tmp_path, change, match):
    data, spec = write(tmp_path, change(make_frame()))
    with pytest.raises(DataError, match=match) as info:
        load_table(data, spec)
    assert "loans.csv" in str(info.value)


# ---------------------------------------------------------------- missing values

def frame_with_gaps(n: int = 200) -> pd.DataFrame:
    """The standard table with missing values in a numeric feature (score), a text feature (region),
    the label and a protected attribute (sex)."""
    frame = make_frame(n)
    frame["score"] = frame["score"].astype(float).where(frame.index % 9 != 3)
    frame["region"] = frame["region"].where(frame.index % 7 != 2)
    frame.loc[[5, 50], "approved"] = None
    frame.loc[[8], "sex"] = None
    return frame


def gap_spec(mode: str) -> str:
    return f'missing = "{mode}"\n' + SPEC


def expected_rows(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.dropna(subset=columns).reset_index(drop=True)


def test_missing_error_is_the_default_and_names_file_column_count(tmp_path):
    frame = frame_with_gaps()
    for spec in (SPEC, gap_spec("error")):
        data, spec_path = write(tmp_path, frame, spec)
        with pytest.raises(DataError) as info:
            load_table(data, spec_path)
        # the label is checked first; its 2 missing cells are counted
        assert str(info.value).startswith(f"{data}: column 'approved' has 2 missing value(s) (NaN)")
        assert 'missing = "drop" or "impute"' in str(info.value)
    data, spec_path = write(tmp_path, make_frame(), gap_spec("error"))
    dataset = load_table(data, spec_path)
    assert dataset.spec.extra["missing"] == "error" and dataset.spec.extra["dropped_rows"] == 0
    assert "missing" not in dataset.preprocessor.to_dict()  # as checkpoints written before the key


def test_missing_drop_drops_and_counts_every_incomplete_row(tmp_path):
    frame = frame_with_gaps()
    data, spec_path = write(tmp_path, frame, gap_spec("drop"))
    dataset = load_table(data, spec_path)
    read = ["approved", "score", "children", "region", "sex", "age", "zone"]  # not the dropped applicant_id
    complete = expected_rows(frame, read)
    assert dataset.spec.extra["missing"] == "drop"
    assert dataset.spec.extra["dropped_rows"] == len(frame) - len(complete) > 0
    assert len(dataset.train) + len(dataset.test) == len(complete)
    for split in (dataset.train, dataset.test):
        assert not split.X.isna().any().any() and not split.groups.isna().any().any()
    assert {f.name: f.kind for f in dataset.spec.features}["region"] == "categorical"
    assert dataset.preprocessor.to_dict()["missing"] == "drop" and "fills" not in dataset.preprocessor.to_dict()
    # the training rows are those of the complete table, split as a table without gaps would be
    clean, clean_spec = write(tmp_path, complete, SPEC, name="clean")
    reference = load_table(clean, clean_spec)
    pd.testing.assert_frame_equal(dataset.train.X, reference.train.X)
    np.testing.assert_array_equal(dataset.encode(dataset.test.X), reference.encode(reference.test.X))


def test_missing_impute_fills_from_the_training_split_only(tmp_path):
    frame = frame_with_gaps()
    # a few extreme scores: the median over all rows and over the training rows then differ
    frame.loc[frame.index % 4 == 1, "score"] = 50.0
    data, spec_path = write(tmp_path, frame, gap_spec("impute"))
    dataset = load_table(data, spec_path)

    # label and protected attribute are never imputed: those rows are dropped
    kept = expected_rows(frame, ["approved", "sex"])
    assert dataset.spec.extra["missing"] == "impute"
    assert dataset.spec.extra["dropped_rows"] == 3 == len(frame) - len(kept)
    assert len(dataset.train) + len(dataset.test) == len(kept)
    assert dataset.train.X["score"].isna().any() and dataset.train.X["region"].isna().any()  # raw data kept as is

    train_median = float(dataset.train.X["score"].median())  # pandas, skipping NaN, training rows only
    assert train_median != float(kept["score"].median())
    state = dataset.preprocessor.to_dict()
    assert state["missing"] == "impute"
    assert state["fills"] == {"score": train_median, "children": float(dataset.train.X["children"].median()),
                              "region": "missing", "age": float(dataset.train.X["age"].median()),
                              "zone": "missing"}
    assert "region=missing" in dataset.preprocessor.encoded_feature_names
    assert "zone=missing" not in dataset.preprocessor.encoded_feature_names  # zone has no gap in training

    X = dataset.encode(dataset.test.X)
    names = dataset.preprocessor.encoded_feature_names
    gaps = dataset.test.X["score"].isna().to_numpy()
    assert gaps.any() and np.isfinite(X).all()
    mean, scale = dataset.preprocessor.means_["score"], dataset.preprocessor.scales_["score"]
    np.testing.assert_allclose(X[gaps, names.index("score")], (train_median - mean) / scale, rtol=1e-6)
    no_region = dataset.test.X["region"].isna().to_numpy()
    assert no_region.any() and (X[no_region, names.index("region=missing")] == 1).all()
    assert (X[~no_region, names.index("region=missing")] == 0).all()


def test_impute_makes_a_two_valued_text_column_with_gaps_categorical(tmp_path):
    frame = make_frame()
    frame["owner"] = np.resize(["yes", "no"], len(frame)).astype(object)
    frame.loc[[3, 4], "owner"] = None
    data, spec_path = write(tmp_path, frame, gap_spec("impute"))
    dataset = load_table(data, spec_path)
    assert {f.name: f.kind for f in dataset.spec.features}["owner"] == "categorical"
    gap_in_training = bool(dataset.train.X["owner"].isna().any())
    assert dataset.preprocessor.categories_["owner"] == ["missing"] * gap_in_training + ["no", "yes"]
    assert dataset.preprocessor.fills_["owner"] == "missing"


def test_impute_refuses_a_numeric_feature_empty_in_training(tmp_path):
    frame = make_frame()
    frame["score"] = np.nan
    data, spec_path = write(tmp_path, frame.assign(approved=np.where(frame.index % 2, "yes", "no")),
                            gap_spec("impute"))
    with pytest.raises(DataError, match="numeric column 'score' has no value in the training split"):
        load_table(data, spec_path)


def test_drop_that_leaves_one_label_value_is_refused(tmp_path):
    frame = make_frame()
    frame["score"] = frame["score"].where(frame["approved"] == "no")
    data, spec_path = write(tmp_path, frame, gap_spec("drop"))
    with pytest.raises(DataError) as info:
        load_table(data, spec_path)
    assert str(info.value).startswith(f"{data}: after dropping the ")
    assert "label column 'approved' has 1 distinct value(s)" in str(info.value)


@pytest.mark.parametrize("value", ['"sometimes"', "1", '["drop"]'])
def test_bad_missing_mode_names_file_key_and_choices(tmp_path, value):
    data, spec_path = write(tmp_path, make_frame(), f"missing = {value}\n" + SPEC, name="mine")
    with pytest.raises(DataError) as info:
        load_table(data, spec_path)
    assert str(info.value).startswith(f"{spec_path}: 'missing' must be one of 'error', 'drop', 'impute', got ")


def test_impute_checkpoint_encodes_gaps_like_the_data_set(tmp_path):
    from scrutiny.models import build_model, load_model, save_checkpoint

    data, spec_path = write(tmp_path, frame_with_gaps(), gap_spec("impute"))
    dataset = load_table(data, spec_path)
    model = build_model("mlp", input_shape=tuple(dataset.preprocessor.input_shape), n_classes=2)
    path = save_checkpoint(tmp_path / "ckpt", model=model, dataset=dataset, metrics={}, training={}, seed=0)
    loaded = load_model(path, dataset=dataset)  # check_fits feeds it test rows with gaps
    restored = loaded.preprocessor()
    assert restored.missing == "impute" and restored.fills_ == dataset.preprocessor.fills_
    rows = dataset.test.X[dataset.test.X.isna().any(axis=1)]
    assert len(rows) and rows["score"].isna().any() and rows["region"].isna().any()
    np.testing.assert_array_equal(restored.transform(rows), dataset.encode(rows))
    # the same file loaded again (as an audit would) encodes the same
    again = load_table(data, spec_path)
    np.testing.assert_array_equal(restored.transform(again.test.X), dataset.encode(dataset.test.X))


def test_preprocessor_dict_without_missing_key_loads_as_error_mode(table):
    from scrutiny.models.preprocessing import preprocessor_from_dict

    dataset, _ = table
    state = dataset.preprocessor.to_dict()
    assert "missing" not in state and "fills" not in state
    restored = preprocessor_from_dict(state, dataset.spec)
    assert restored.missing == "error" and restored.fills_ == {}
    np.testing.assert_array_equal(restored.transform(dataset.test.X), dataset.encode(dataset.test.X))
    with pytest.raises(DataError, match="numeric column 'score' has 1 missing"):
        restored.transform(dataset.test.X.assign(score=dataset.test.X["score"].where(dataset.test.X.index != 0)))


@pytest.mark.parametrize("change, match", [
    ({"missing": "sometimes"}, "'missing' must be one of 'error', 'drop', 'impute'"),
    ({"fills": None}, "'fills' must map each numeric and categorical feature"),
    ({"fills": {"score": 0.5}}, "'fills' must map each numeric and categorical feature"),
    ({"fills": "text"}, "'fills' must map"),
])
def test_bad_imputing_preprocessor_dict(tmp_path, change, match):
    from scrutiny.models.preprocessing import preprocessor_from_dict

    data, spec_path = write(tmp_path, frame_with_gaps(), gap_spec("impute"))
    dataset = load_table(data, spec_path)
    state = {**dataset.preprocessor.to_dict(), **change}
    with pytest.raises(DataError, match=match):
        preprocessor_from_dict(state, dataset.spec)
    state = dataset.preprocessor.to_dict()
    state["fills"] = {**state["fills"], "score": "high"}
    with pytest.raises(DataError, match="'fills' of 'score' must be a finite number"):
        preprocessor_from_dict(state, dataset.spec)


def test_cli_train_with_impute_records_fills_and_bad_mode_is_one_error_line(tmp_path, capsys):
    import json

    from scrutiny.cli import main

    data, spec_path = write(tmp_path, frame_with_gaps(), gap_spec("impute"))
    out = tmp_path / "model"
    assert main(["train", "--data", str(data), "--spec", str(spec_path), "--out", str(out), "--epochs", "1",
                 "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["missing"] == "impute"
    assert manifest["preprocessing"]["fills"]["region"] == "missing"
    assert manifest["dataset"]["spec"]["extra"]["dropped_rows"] == 3
    config = tmp_path / "audit.toml"
    config.write_text('families = ["performance"]\n')
    run = tmp_path / "run"
    assert main(["audit", str(out), "--data", str(data), "--spec", str(spec_path), "--config", str(config),
                 "--out", str(run)]) in (0, 1)
    recorded = json.loads((run / "manifest.json").read_text())["data"]
    assert recorded["missing"] == {"mode": "impute", "dropped_rows": 3}
    assert "missing" not in json.loads((run / "findings.json").read_text())["subject"]["data"]
    capsys.readouterr()

    bad, bad_spec = write(tmp_path, make_frame(), gap_spec("sometimes"), name="bad")
    code = main(["train", "--data", str(bad), "--spec", str(bad_spec), "--out", str(tmp_path / "m2"),
                 "--epochs", "1", "--device", "cpu"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "bad.toml" in lines[0] and "'missing'" in lines[0] and "'impute'" in lines[0]
