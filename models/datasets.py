"""Loaders for the built-in data sets and a user's own table.

``load_dataset(name)`` returns a :class:`Dataset`: the spec, raw train and test splits, the
preprocessing fitted on the training split, and the SHA-256 of the source data.

Built-in data sets:

- ``adult``: UCI Adult census income; ``adult.data`` trains, ``adult.test`` tests; rows with
  missing values dropped and ``fnlwgt`` left out, as AIF360 does. Protected ``sex`` (Male
  privileged) and ``race`` (White privileged); favourable label ``>50K``. Prohibited bases:
  sex, race, marital-status, relationship, native-country, age. Immutable: age.
- ``german``: UCI Statlog German credit; ``sex`` derived from personal status (male
  privileged, as AIF360), ``age`` with age >= 25 privileged; favourable label good credit.
  Prohibited bases: sex, age, foreign_worker. Immutable: age.
- ``compas``: ProPublica COMPAS two-year recidivism, ProPublica's row filter; protected
  ``race`` (Caucasian privileged) and ``sex`` (Female privileged, as AIF360); favourable
  label: no recidivism within two years. Prohibited bases: race, sex, age, age_cat.
  Immutable: age, age_cat.

Prohibited bases follow ECOA / Regulation B, 12 CFR 1002.2(z): race, color, religion, national
origin, sex, marital status, age, income from public assistance, and the good-faith exercise of
rights under the Consumer Credit Protection Act; each data set lists the columns that are one
(or stand in for one). An adverse-action notice may not give them as reasons. Immutable columns
are those an applicant cannot change; robustness attacks hold them and the protected attributes.
- ``breast_cancer``: scikit-learn's Wisconsin diagnostic data; favourable label benign.
- ``digits``: scikit-learn's 8×8 handwritten digits as 1×8×8 images in [0, 1], 10 classes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from scrutiny.errors import DataError, InputError
from scrutiny.models.data_files import raw_path
from scrutiny.models.preprocessing import ImagePreprocessor, TabularPreprocessor
from scrutiny.models.spec import DatasetSpec, Feature, ProtectedAttribute

__all__ = ["Split", "Dataset", "DATASETS", "load_dataset", "split_frame"]

SPLIT_SEED = 0


@dataclass
class Split:
    """One split in original units.

    Args:
        X: raw feature columns (tabular) or images of shape (N, C, H, W).
        y: class indices; for binary tasks 1 is the favourable outcome.
        groups: the raw protected-attribute columns (empty frame when there are none).
        weights: how many rows each entry stands for, or None (one each). Logged decisions
            streamed from Parquet come as their distinct rows with counts
            (:func:`~scrutiny.models.load_predictions`); every statistic of the performance and
            fairness families takes them as that many rows.
    """

    X: pd.DataFrame | np.ndarray
    y: np.ndarray
    groups: pd.DataFrame
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        """Rows: the entries, each counted as many times as its weight."""
        return len(self.y) if self.weights is None else int(self.weights.sum())


@dataclass
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split
    preprocessor: TabularPreprocessor | ImagePreprocessor
    sha256: str

    def encode(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw features → the float32 matrix (or image tensor) the model reads."""
        return self.preprocessor.transform(X)


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a built-in data set by name (see the module docstring for the list).

    Example:
        >>> data = load_dataset("adult")  # doctest: +SKIP
        >>> len(data.train), len(data.test), [p.name for p in data.spec.protected]  # doctest: +SKIP
        (30162, 15060, ['sex', 'race'])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in DATASETS:
        raise InputError(f"unknown data set '{name}'; expected one of: {', '.join(DATASETS)}, or a CSV/Parquet file")
    return DATASETS[name](data_dir)


def split_frame(frame: pd.DataFrame, spec: DatasetSpec, *, test_size: float, seed: int = SPLIT_SEED):
    """Stratified, seeded train/test split of a frame that holds label and feature columns."""
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame[spec.label])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def tabular_dataset(spec: DatasetSpec, train: pd.DataFrame, test: pd.DataFrame, sha256: str, *,
                    missing: str = "error") -> Dataset:
    """Build a :class:`Dataset` from frames whose label column holds raw label values; ``missing``
    is passed to the preprocessor (``"impute"`` fits its fill values on ``train`` only). A binary
    label is 1 where it equals the favourable value; a multiclass label is its value's position in
    ``spec.classes`` (the values as text)."""
    preprocessor = TabularPreprocessor(spec, missing=missing).fit(train)

    def labels(frame: pd.DataFrame) -> np.ndarray:
        if spec.is_binary:
            return (frame[spec.label] == spec.favourable_label).to_numpy().astype(np.int64)
        codes = pd.Categorical(frame[spec.label].astype(str), categories=list(spec.classes)).codes
        if (codes < 0).any():
            unknown = sorted(set(frame[spec.label].astype(str)) - set(spec.classes))
            raise DataError(f"data set '{spec.name}': label '{spec.label}' has value(s) {', '.join(unknown[:5])} "
                            f"outside its classes ({', '.join(spec.classes)})")
        return codes.astype(np.int64)

    def as_split(frame: pd.DataFrame) -> Split:
        y = labels(frame)
        groups = frame[[p.name for p in spec.protected]].reset_index(drop=True)
        return Split(X=frame[spec.feature_names].reset_index(drop=True), y=y, groups=groups)

    return Dataset(spec=spec, train=as_split(train), test=as_split(test), preprocessor=preprocessor, sha256=sha256)


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _numeric(*names: str, integer: bool = True) -> tuple[Feature, ...]:
    return tuple(Feature(n, "numeric", integer=integer) for n in names)


def _categorical(*names: str) -> tuple[Feature, ...]:
    return tuple(Feature(n, "categorical") for n in names)


# ---------------------------------------------------------------- Adult

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]

ADULT_SPEC = DatasetSpec(
    name="adult",
    task="tabular",
    label="income",
    classes=("<=50K", ">50K"),
    favourable_label=">50K",
    features=(
        _numeric("age")
        + _categorical("workclass", "education")
        + _numeric("education-num")
        + _categorical("marital-status", "occupation", "relationship", "race")
        + (Feature("sex", "binary"),)
        + _numeric("capital-gain", "capital-loss", "hours-per-week")
        + _categorical("native-country")
    ),
    protected=(ProtectedAttribute("sex", ("Male",)), ProtectedAttribute("race", ("White",))),
    description="UCI Adult census income: does a person earn more than $50K a year?",
    # relationship (Husband, Wife, Unmarried, …) is a proxy for marital status and sex;
    # native-country is national origin
    prohibited=("sex", "race", "marital-status", "relationship", "native-country", "age"),
    immutable=("age",),
)


def _read_adult(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?",
        comment="|", skip_blank_lines=True,
    )
    frame["income"] = frame["income"].str.rstrip(".")
    return frame.dropna().drop(columns="fnlwgt").reset_index(drop=True)


def load_adult(data_dir=None) -> Dataset:
    paths = [raw_path("adult", "adult.data", data_dir), raw_path("adult", "adult.test", data_dir)]
    return tabular_dataset(ADULT_SPEC, _read_adult(paths[0]), _read_adult(paths[1]), _hash_files(paths))


# ---------------------------------------------------------------- German credit

GERMAN_COLUMNS = [
    "checking_status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "employment", "installment_rate", "personal_status", "other_debtors", "residence_since",
    "property", "age", "other_installment_plans", "housing", "existing_credits", "job",
    "num_people_liable", "telephone", "foreign_worker", "credit",
]

# The UCI codes (A11, A12, …) spelled out, so reports can say "checking_status = < 0 DM".
GERMAN_CODES = {
    "A11": "< 0 DM", "A12": "0-200 DM", "A13": ">= 200 DM", "A14": "no checking account",
    "A30": "no credits / all paid", "A31": "all paid at this bank", "A32": "existing paid duly",
    "A33": "delays in the past", "A34": "critical account",
    "A40": "new car", "A41": "used car", "A42": "furniture/equipment", "A43": "radio/television",
    "A44": "domestic appliances", "A45": "repairs", "A46": "education", "A47": "vacation",
    "A48": "retraining", "A49": "business", "A410": "other",
    "A61": "< 100 DM", "A62": "100-500 DM", "A63": "500-1000 DM", "A64": ">= 1000 DM", "A65": "unknown/none",
    "A71": "unemployed", "A72": "< 1 year", "A73": "1-4 years", "A74": "4-7 years", "A75": ">= 7 years",
    "A101": "none", "A102": "co-applicant", "A103": "guarantor",
    "A121": "real estate", "A122": "savings/life insurance", "A123": "car or other", "A124": "unknown/none",
    "A141": "bank", "A142": "stores", "A143": "none",
    "A151": "rent", "A152": "own", "A153": "for free",
    "A171": "unskilled non-resident", "A172": "unskilled resident", "A173": "skilled", "A174": "highly qualified",
    "A191": "none", "A192": "yes", "A201": "yes", "A202": "no",
}
GERMAN_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}

GERMAN_SPEC = DatasetSpec(
    name="german",
    task="tabular",
    label="credit",
    classes=("bad", "good"),
    favourable_label="good",
    features=(
        _categorical("checking_status")
        + _numeric("duration")
        + _categorical("credit_history", "purpose")
        + _numeric("credit_amount")
        + _categorical("savings", "employment")
        + _numeric("installment_rate")
        + (Feature("sex", "binary"),)
        + _categorical("other_debtors")
        + _numeric("residence_since")
        + _categorical("property")
        + _numeric("age")
        + _categorical("other_installment_plans", "housing")
        + _numeric("existing_credits")
        + _categorical("job")
        + _numeric("num_people_liable")
        + (Feature("telephone", "binary"), Feature("foreign_worker", "binary"))
    ),
    protected=(ProtectedAttribute("sex", ("male",)), ProtectedAttribute("age", privileged_min=25)),
    description="UCI Statlog German credit: is an applicant a good credit risk?",
    # sex is what scrutiny keeps of the personal_status column (whose codes also mix in marital
    # status); foreign_worker stands in for national origin
    prohibited=("sex", "age", "foreign_worker"),
    immutable=("age",),
)


def load_german(data_dir=None) -> Dataset:
    path = raw_path("german", "german.data", data_dir)
    frame = pd.read_csv(path, sep=" ", header=None, names=GERMAN_COLUMNS)
    frame["sex"] = frame.pop("personal_status").map(GERMAN_SEX)
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(GERMAN_CODES).fillna(frame[column])
    frame["credit"] = frame["credit"].map({1: "good", 2: "bad"})
    train, test = split_frame(frame, GERMAN_SPEC, test_size=0.3)
    return tabular_dataset(GERMAN_SPEC, train, test, _hash_files([path]))


# ---------------------------------------------------------------- COMPAS

COMPAS_SPEC = DatasetSpec(
    name="compas",
    task="tabular",
    label="two_year_recid",
    classes=("recidivism", "no recidivism"),
    favourable_label=0,
    features=(
        (Feature("sex", "binary"),)
        + _numeric("age")
        + _categorical("age_cat", "race")
        + _numeric("juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count")
        + (Feature("c_charge_degree", "binary"),)
    ),
    protected=(ProtectedAttribute("race", ("Caucasian",)), ProtectedAttribute("sex", ("Female",))),
    description="ProPublica COMPAS: does a defendant avoid re-offending within two years?",
    prohibited=("race", "sex", "age", "age_cat"),  # age_cat is age in three bands
    immutable=("age", "age_cat"),
)


def load_compas(data_dir=None) -> Dataset:
    path = raw_path("compas", "compas-scores-two-years.csv", data_dir)
    frame = pd.read_csv(path)
    # ProPublica's filter (compas-analysis notebook): charge near the screening date, a
    # known recidivism outcome, no ordinary traffic offences, and a COMPAS score present.
    keep = (
        frame["days_b_screening_arrest"].between(-30, 30)
        & (frame["is_recid"] != -1)
        & (frame["c_charge_degree"] != "O")
        & (frame["score_text"] != "N/A")
        & frame["score_text"].notna()
    )
    frame = frame.loc[keep, COMPAS_SPEC.feature_names + ["two_year_recid"]].reset_index(drop=True)
    train, test = split_frame(frame, COMPAS_SPEC, test_size=0.3)
    return tabular_dataset(COMPAS_SPEC, train, test, _hash_files([path]))


# ---------------------------------------------------------------- scikit-learn data sets


def load_breast_cancer(data_dir=None) -> Dataset:
    from sklearn.datasets import load_breast_cancer as sklearn_breast_cancer

    bunch = sklearn_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map({0: "malignant", 1: "benign"})
    spec = DatasetSpec(
        name="breast_cancer",
        task="tabular",
        label="diagnosis",
        classes=("malignant", "benign"),
        favourable_label="benign",
        features=_numeric(*bunch.feature_names, integer=False),
        description="Wisconsin diagnostic breast cancer (scikit-learn): is a tumour benign?",
    )
    train, test = split_frame(frame, spec, test_size=0.25)
    return tabular_dataset(spec, train, test, _hash_arrays(bunch.data.to_numpy(), bunch.target.to_numpy()))


DIGITS_SPEC = DatasetSpec(
    name="digits",
    task="image",
    label="digit",
    classes=tuple(str(d) for d in range(10)),
    image_shape=(1, 8, 8),
    pixel_range=(0.0, 1.0),
    description="scikit-learn 8x8 handwritten digits: which digit is it?",
)


def load_digits(data_dir=None) -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    target = bunch.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        images, target, test_size=0.25, random_state=SPLIT_SEED, stratify=target
    )
    empty = pd.DataFrame(index=range(0))
    return Dataset(
        spec=DIGITS_SPEC,
        train=Split(X_train, y_train, empty.reindex(range(len(y_train)))),
        test=Split(X_test, y_test, empty.reindex(range(len(y_test)))),
        preprocessor=ImagePreprocessor(DIGITS_SPEC).fit(X_train),
        sha256=_hash_arrays(bunch.images, bunch.target),
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "adult": load_adult,
    "german": load_german,
    "compas": load_compas,
    "breast_cancer": load_breast_cancer,
    "digits": load_digits,
}
