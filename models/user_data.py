"""A user's own CSV or Parquet table, described by a small TOML spec.

Example ``loans.toml`` for ``loans.csv``::

    label = "approved"            # label column (required)
    favourable = "yes"            # label value that is the favourable outcome (required); for a
                                  # label of more than two values, a list may name the favourable
                                  # set: favourable = ["Adelie", "Gentoo"]
    categorical = ["region"]      # columns to one-hot even if they hold numbers
    drop = ["applicant_id"]       # columns the model must not read
    test_size = 0.25              # share held out for testing, stratified; default 0.25
    seed = 0                      # split seed; default 0
    prohibited = ["marital_status", "zip"]  # prohibited bases of a decision besides the protected
                                  # columns (ECOA: marital status, age, national origin, … and
                                  # proxies); adverse-action notices may not state them as reasons
    immutable = ["age"]           # features an applicant cannot change: robustness attacks hold
                                  # them (and the protected columns); default none
    missing = "error"             # missing values (NaN, empty cells): "error" (default), "drop" the
                                  # rows, or "impute" features from the training split (median of a
                                  # number, category "missing" for text); a row missing its label
                                  # or a protected attribute is dropped, never imputed

    [protected]                   # protected attribute -> privileged group
    sex = ["male"]                #   privileged values
    age = { min = 25 }            #   or a numeric minimum
    race = { reference = "white" }  # or a reference category: each other category is compared with it

A label of two values is binary: classes (unfavourable, favourable), ``y == 1`` favourable. A label
of more than two is multiclass: its classes are the values as text in sorted order, a row's class
index their position, and the favourable values are ``spec.favourable_classes`` (fairness compares
groups one-vs-rest: favourable means a class of that set).

Every other column is a feature: numeric columns are scaled, text columns with two values are
binary and other text columns categorical (with ``missing = "impute"``, a text column with missing
values is categorical, "missing" being one more category). Protected columns stay features unless
dropped. The mode and the number of rows dropped for missing values are in ``spec.extra``
(``missing``, ``dropped_rows``); the preprocessor records the mode and its fill values.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from scrutiny.errors import DataError
from scrutiny.hashing import sha256_file
from scrutiny.limits import check_int
from scrutiny.models.datasets import Dataset, split_frame, tabular_dataset
from scrutiny.models.preprocessing import MISSING_MODES
from scrutiny.models.spec import DatasetSpec, Feature, ProtectedAttribute

__all__ = ["load_table", "read_table_spec", "SPEC_KEYS"]

SPEC_KEYS = {"label", "favourable", "categorical", "drop", "test_size", "seed", "protected", "prohibited",
             "immutable", "description", "missing"}


def read_spec_file(path: Path, keys: set[str]) -> dict:
    """A TOML spec with only ``keys`` and the required ``label`` and ``favourable`` (a table spec,
    a predictions spec); errors name the file and the key."""
    if not path.is_file():
        raise DataError(f"{path}: spec file not found")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)}; expected: {', '.join(sorted(keys))}")
    for key in ("label", "favourable"):
        if key not in spec:
            raise DataError(f"{path}: missing required key '{key}'")
    return spec


def read_table_spec(path: str | os.PathLike) -> dict:
    """Read and check a TOML table spec; errors name the file and the key."""
    path = Path(path)
    spec = read_spec_file(path, SPEC_KEYS)
    favourable = spec["favourable"]
    if not (_is_label_value(favourable) or isinstance(favourable, list) and favourable
            and all(map(_is_label_value, favourable))):
        raise DataError(f"{path}: 'favourable' must be a label value or a non-empty list of label values, "
                        f"got {favourable!r}")
    for key in ("categorical", "drop", "prohibited", "immutable"):
        if not isinstance(spec.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list of column names")
    if not isinstance(spec.get("protected", {}), dict):
        raise DataError(f"{path}: [protected] must be a table of column = privileged values")
    test_size = spec.get("test_size", 0.25)
    if not isinstance(test_size, (int, float)) or not 0 < test_size < 1:
        raise DataError(f"{path}: test_size must be a number between 0 and 1, got {test_size!r}")
    check_int("seed", spec.get("seed", 0), where=str(path))
    if spec.get("missing", "error") not in MISSING_MODES:
        raise DataError(f"{path}: 'missing' must be one of {', '.join(f'{m!r}' for m in MISSING_MODES)}, "
                        f"got {spec['missing']!r}")
    label = spec["label"]
    for key in ("drop", "categorical"):
        if label in spec.get(key, []):
            raise DataError(f"{path}: '{key}' lists the label column '{label}'; the label is never a feature")
    if label in spec.get("protected", {}):
        raise DataError(f"{path}: [protected] lists the label column '{label}'; a protected attribute must be "
                        "a column other than the outcome")
    return spec


def load_table(path: str | os.PathLike, spec_path: str | os.PathLike) -> Dataset:
    """Load a CSV or Parquet file as a tabular :class:`Dataset`, described by the TOML spec at
    ``spec_path`` (label, favourable value or values, categorical, protected and immutable
    columns, split; see README, "Your own table"). A label of two values is binary, one of more
    is multiclass (see the module docstring).

    Example:
        >>> data = load_table("loans.csv", "loans.toml")  # doctest: +SKIP
        >>> data.spec.label, data.spec.classes  # doctest: +SKIP
        ('approved', ('no', 'yes'))
    """
    for name, value in (("path", path), ("spec_path", spec_path)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    path = Path(path)
    options = read_table_spec(spec_path)
    frame = read_frame(path)
    label = options["label"]
    if label not in frame.columns:
        raise DataError(f"{path}: label column '{label}' not found (columns: {', '.join(map(str, frame.columns))})")
    labels = frame[label].dropna().unique()
    if len(labels) < 2:
        raise DataError(
            f"{path}: label column '{label}' has {len(labels)} distinct value(s) ({_shown(labels)}); "
            "a label needs at least two"
        )
    classes, favourable = _classes(frame[label], labels, options["favourable"], path, spec_path)

    protected = []
    for column, privileged in options.get("protected", {}).items():
        if column not in frame.columns:
            raise DataError(f"{path}: protected column '{column}' not found")
        protected.append(protected_attribute(column, privileged, spec_path))
        check_reference(protected[-1], frame[column], f"{path} (reference named in {spec_path})")
    # protected attributes are prohibited bases too (DatasetSpec.prohibited_bases adds them)
    prohibited = tuple(dict.fromkeys(options.get("prohibited", [])))
    for column in prohibited:
        if column not in frame.columns:
            raise DataError(f"{path}: prohibited column {column!r} named in {spec_path} not found "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        if column == label:
            raise DataError(f"{spec_path}: prohibited column {column!r} is the label; list the features that are "
                            "prohibited bases")

    for column in options.get("categorical", []) + options.get("drop", []):
        if column not in frame.columns:
            raise DataError(f"{path}: column '{column}' named in {spec_path} not found")

    dropped = set(options.get("drop", [])) | {label}
    missing = options.get("missing", "error")
    read = list(dict.fromkeys([label] + [c for c in frame.columns if c not in dropped] + [p.name for p in protected]))
    frame, dropped_rows = _handle_missing(frame, missing, read, [label] + [p.name for p in protected], path,
                                          spec_path)
    vanished = sorted(set(classes) - set(frame[label].astype(str)))
    if vanished:  # only a multiclass label can lose a class and keep two (a binary one is refused above)
        raise DataError(f"{path}: after dropping the {dropped_rows} row(s) with missing values (missing = "
                        f"{missing!r}), class(es) {', '.join(map(repr, vanished))} of label column '{label}' have "
                        "no row left; drop them from the table or fill the gaps first")
    features = tuple(
        _feature(frame[c], c, c in options.get("categorical", []), impute=missing == "impute")
        for c in frame.columns if c not in dropped
    )
    if not features:
        raise DataError(f"{spec_path}: no feature columns left after drop {options.get('drop', [])} and the label "
                        f"'{label}'; the model needs at least one column to read")
    immutable = _immutable(options.get("immutable", []), features, spec_path)
    used = list(dict.fromkeys([label] + [f.name for f in features] + [p.name for p in protected]))
    _check_finite(frame, used, path)
    _check_split_size(frame[label], label, options.get("test_size", 0.25), path)

    binary = len(classes) == 2
    spec = DatasetSpec(
        name=path.stem,
        task="tabular",
        label=label,
        classes=classes,
        favourable_label=(favourable[0].item() if hasattr(favourable[0], "item") else favourable[0]) if binary else None,
        favourable_classes=() if binary else tuple(c for c in classes if c in {str(v) for v in favourable}),
        features=features,
        protected=tuple(protected),
        prohibited=prohibited,
        immutable=immutable,
        description=options.get("description", f"user table {path.name}"),
        extra={"source": path.name, "test_size": options.get("test_size", 0.25), "seed": options.get("seed", 0),
               "missing": missing, "dropped_rows": dropped_rows},
    )
    train, test = split_frame(frame, spec, test_size=options.get("test_size", 0.25), seed=options.get("seed", 0))
    return tabular_dataset(spec, train, test, sha256_file(path), missing=missing)


def _classes(column: pd.Series, labels: np.ndarray, wanted, path: Path, spec_path) -> tuple[tuple[str, ...], list]:
    """The class names and the favourable label values (as they are in the column). Two values:
    (unfavourable, favourable). More: the values as text, sorted."""
    wanted = wanted if isinstance(wanted, list) else [wanted]
    absent = [w for w in wanted if match_value(w, labels) is None]
    if absent:
        raise DataError(
            f"{path}: favourable value{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} named in "
            f"{spec_path} {'are' if len(absent) > 1 else 'is'} not in label column '{column.name}' "
            f"(values: {_shown(labels, 10)})"
        )
    favourable = list(dict.fromkeys(match_value(w, labels) for w in wanted))
    if len(favourable) == len(labels):
        raise DataError(f"{spec_path}: 'favourable' names every value of label column '{column.name}' "
                        f"({_shown(labels, 10)}); leave at least one unfavourable")
    if len(labels) == 2:
        return (str(next(v for v in labels if v not in favourable)), str(favourable[0])), favourable
    if pd.api.types.is_float_dtype(column) and not (labels == np.round(labels)).all():
        raise DataError(f"{path}: label column '{column.name}' holds fractional numbers ({_shown(labels)}); "
                        "a label is a class, and scrutiny audits classifiers")
    classes = tuple(sorted(str(v) for v in labels))
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: label column '{column.name}' has distinct values that read the same as text "
                        f"({_shown(labels)}); give each class one spelling")
    return classes, favourable


def _shown(values, limit: int = 5) -> str:
    return ", ".join(map(str, values[:limit])) + (", …" if len(values) > limit else "")


def _is_label_value(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _handle_missing(frame: pd.DataFrame, mode: str, columns: list[str], never_imputed: list[str], path: Path,
                    spec_path) -> tuple[pd.DataFrame, int]:
    """The rows kept and how many were dropped for missing values in ``columns`` (those the data set
    reads): ``"error"`` refuses any, ``"drop"`` drops their rows, ``"impute"`` drops only the rows
    missing a ``never_imputed`` column (the label, the protected attributes) and leaves the other
    gaps to the preprocessor."""
    if mode == "error":
        for column in columns:
            count = int(frame[column].isna().sum())
            if count:
                raise DataError(f"{path}: column '{column}' has {count} missing value(s) (NaN); fill or drop them "
                                f"first, or set missing = \"drop\" or \"impute\" in {spec_path}")
        return frame, 0
    gaps = frame[columns if mode == "drop" else never_imputed].isna().any(axis=1)
    kept = frame[~gaps].reset_index(drop=True)
    label = never_imputed[0]
    if kept[label].nunique() < 2:
        raise DataError(f"{path}: after dropping the {int(gaps.sum())} row(s) with missing values (missing = "
                        f"{mode!r}), label column '{label}' has {kept[label].nunique()} distinct value(s); "
                        "a label needs at least two")
    return kept, int(gaps.sum())


def read_frame(path: Path, *, used: list[str] | None = None) -> pd.DataFrame:
    """The table at ``path``. A CSV header that repeats a name is refused (pandas would rename the
    copies ``age.1``, …); with ``used``, only where one of those columns is repeated with different
    values in its copies (ProPublica's COMPAS file repeats two columns, each copy equal)."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{path}: expected a .csv or .parquet file")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot be read as a table ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows")
    if path.suffix.lower() == ".csv":
        _check_unique_header(path, frame, used)
    return frame


def _check_unique_header(path: Path, frame: pd.DataFrame, used: list[str] | None) -> None:
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    counts = pd.Series(header).value_counts()
    repeated = counts[counts > 1]
    if used is not None:  # pandas names the copies name.1, name.2, … in the frame
        repeated = repeated[[name in used and not all(frame[name].equals(frame[f"{name}.{i}"]) for i in range(1, count))
                             for name, count in repeated.items()]]
    if len(repeated):
        shown = ", ".join(f"'{name}' ({count} times)" for name, count in repeated.items())
        differ = " with different values" if used is not None else ""
        raise DataError(f"{path}: the header repeats column name(s) {shown}{differ}; give each column its own name")


def _check_finite(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """±inf (also what a CSV number beyond float range, such as 5e309, parses to) in the columns read."""
    counts = {}
    for column in columns:
        if pd.api.types.is_float_dtype(frame[column]):
            infinite = int(np.isinf(frame[column].to_numpy(dtype=np.float64)).sum())
            if infinite:
                counts[column] = infinite
    if counts:
        shown = ", ".join(f"'{column}' ({count})" for column, count in counts.items())
        raise DataError(f"{path}: infinite values (inf, or numbers too large for a float such as 1e309) in "
                        f"column(s) {shown}; replace or drop them first")


def _check_split_size(labels: pd.Series, label: str, test_size: float, path: Path) -> None:
    """The conditions of a stratified train/test split (scikit-learn's): every class has two rows,
    and both parts can hold a row of each class."""
    counts = labels.astype(str).value_counts()
    n, k = len(labels), len(counts)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if counts.min() >= 2 and min(n_test, n_train) >= k:
        return
    shown = ", ".join(f"{count} of '{value}'" for value, count in counts.items())
    raise DataError(
        f"{path}: {n} rows are too few for a stratified train/test split: label '{label}' has {shown}; "
        f"each class needs at least 2 rows, and test_size {test_size:g} must leave at least {k} test and {k} "
        f"training rows (it leaves {n_test} and {n_train})"
    )


def _feature(column: pd.Series, name: str, categorical: bool, *, impute: bool = False) -> Feature:
    if categorical or (impute and column.isna().any() and not pd.api.types.is_numeric_dtype(column)):
        return Feature(name, "categorical")
    if pd.api.types.is_bool_dtype(column):
        return Feature(name, "binary")
    if pd.api.types.is_numeric_dtype(column):
        values = column.dropna()
        return Feature(name, "numeric", integer=bool((values == values.round()).all()))
    return Feature(name, "binary" if column.nunique() == 2 else "categorical")


def _immutable(columns: list, features: tuple[Feature, ...], spec_path) -> tuple[str, ...]:
    names = [f.name for f in features]
    for column in columns:
        if column not in names:
            raise DataError(f"{spec_path}: 'immutable' names {column!r}, which is not a feature column "
                            f"(features: {', '.join(names)})")
    return tuple(dict.fromkeys(columns))


def protected_attribute(column: str, privileged, spec_path) -> ProtectedAttribute:
    if isinstance(privileged, dict) and set(privileged) == {"min"} and isinstance(privileged["min"], (int, float)):
        return ProtectedAttribute(column, privileged_min=float(privileged["min"]))
    if isinstance(privileged, dict) and set(privileged) == {"reference"} \
            and isinstance(privileged["reference"], (str, int, float)):
        return ProtectedAttribute(column, reference=privileged["reference"])
    if isinstance(privileged, list) and privileged:
        return ProtectedAttribute(column, tuple(privileged))
    raise DataError(
        f"{spec_path}: protected '{column}' must be a list of privileged values, {{ min = NUMBER }} or "
        f"{{ reference = CATEGORY }}"
    )


def check_reference(attribute: ProtectedAttribute, column: pd.Series, where: str) -> None:
    """A reference category must be one of the column's values (compared as text)."""
    if attribute.reference is None:
        return
    present = sorted(set(column.dropna().astype(str)))
    if str(attribute.reference) not in present:
        raise DataError(f"{where}: reference category {attribute.reference!r} of '{attribute.name}' not found in "
                        f"the column (values: {', '.join(present[:8])}{', …' if len(present) > 8 else ''})")


def match_value(value, candidates):
    """The candidate equal to ``value``, comparing as text when types differ (TOML "1" vs 1)."""
    for candidate in candidates:
        if candidate == value or str(candidate) == str(value):
            return candidate
    return None
