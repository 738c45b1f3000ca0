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
        (lambda f: f.assign(approved=np.resize(["yes", "no", "maybe"], len(f))), "3 distinct"),
        (lambda f: f.assign(approved="yes"), "1 distinct"),
        (lambda f: f.assign(approved=np.where(f["score"] > 0, "Y", "N")), "favourable value 'yes'"),
        (lambda f: f.assign(score=f["score"].where(f.index != 5)), "'score' has 1 missing"),
        (lambda f: f.assign(region=f["region"].where(f.index != 7)), "'region' has 1 missing"),
        (lambda f: f.drop(columns="sex"), "protected column 'sex' not found"),
        (lambda f: f.drop(columns="zone"), "'zone'"),
    ],
    ids=["no-label", "three-labels", "one-label", "favourable-absent", "nan-numeric", "nan-text",
         "protected-absent", "categorical-absent"],
)
def test_bad_columns(tmp_path, change, match):
    data, spec = write(tmp_path, change(make_frame()))
    with pytest.raises(DataError, match=match) as info:
        load_table(data, spec)
    assert "loans.csv" in str(info.value)
