"""Feature spaces: original tabular features and image patches over the model's input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scrutiny.audit.attributions.feature_space import FeatureSpace, patch_groups, tabular_space


@pytest.fixture(scope="module")
def adult(load):
    dataset = load("adult")
    space = tabular_space(dataset.preprocessor)
    rows = dataset.encode(dataset.test.X.iloc[:500])
    return dataset, space, rows


def _covers_once(space: FeatureSpace) -> None:
    size = int(np.prod(space.input_shape))
    flat = np.concatenate([np.asarray(g) for g in space.groups])
    np.testing.assert_array_equal(np.sort(flat), np.arange(size))  # every position, exactly once
    mask = space.mask()
    assert mask.shape == tuple(space.input_shape)
    assert mask.dtype.kind == "i"
    for g, idx in enumerate(space.groups):
        assert set(np.flatnonzero(mask.reshape(-1) == g)) == set(idx)


# ------------------------------------------------------------------ tabular


def test_tabular_space_matches_preprocessor(adult):
    dataset, space, _ = adult
    pre = dataset.preprocessor
    assert space.kind == "tabular"
    assert space.names == tuple(dataset.spec.feature_names)
    assert space.n_features == len(dataset.spec.features)
    assert space.input_shape == (pre.n_encoded,)
    assert space.categorical == tuple(f.kind == "categorical" for f in dataset.spec.features)
    names = pre.encoded_feature_names
    workclass = space.groups[space.names.index("workclass")]
    assert [names[i] for i in workclass] == [f"workclass={c}" for c in pre.categories_["workclass"]]
    assert space.groups[space.names.index("age")] == (names.index("age"),)


def test_tabular_mask_covers_every_position_once(adult):
    _covers_once(adult[1])


def test_codes_round_trip_exactly_on_adult_rows(adult):
    dataset, space, rows = adult
    Z = space.to_codes(rows)
    assert Z.shape == (len(rows), space.n_features)
    back = space.from_codes(Z)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, rows)
    # categories are indices into the fitted category list
    g = space.names.index("workclass")
    categories = dataset.preprocessor.categories_["workclass"]
    expected = pd.Index(categories).get_indexer(dataset.test.X["workclass"].iloc[:500].astype(str))
    np.testing.assert_array_equal(Z[:, g], expected)
    # numeric and binary features keep their encoded value
    for name in ("age", "sex", "hours-per-week"):
        g = space.names.index(name)
        np.testing.assert_array_equal(Z[:, g], rows[:, space.groups[g][0]])


def test_codes_of_copied_values_are_valid_rows(adult):
    """Mixing codes of different rows (what KernelSHAP and LIME do) gives one-hot blocks."""
    _, space, rows = adult
    rng = np.random.default_rng(0)
    Z = space.to_codes(rows)
    mixed = np.stack([Z[rng.integers(len(Z), size=space.n_features), np.arange(space.n_features)] for _ in range(50)])
    X = space.from_codes(mixed)
    for g, idx in enumerate(space.groups):
        if space.categorical[g]:
            np.testing.assert_array_equal(X[:, list(idx)].sum(axis=1), 1.0)


def test_unseen_category_is_code_minus_one_and_zero_block(adult):
    dataset, space, rows = adult
    raw = dataset.test.X.iloc[:3].copy()
    raw["workclass"] = "Martian"  # never seen in training: encodes as an all-zero block
    encoded = dataset.encode(raw)
    g = space.names.index("workclass")
    idx = list(space.groups[g])
    assert (encoded[:, idx] == 0).all()
    Z = space.to_codes(encoded)
    np.testing.assert_array_equal(Z[:, g], -1)
    back = space.from_codes(Z)
    assert (back[:, idx] == 0).all()
    np.testing.assert_array_equal(back, encoded)
    # the other features are untouched
    np.testing.assert_array_equal(np.delete(Z, g, axis=1), np.delete(space.to_codes(rows[:3]), g, axis=1))


def test_spread_then_sum_by_feature_gives_back_values(adult):
    _, space, rows = adult
    rng = np.random.default_rng(1)
    per_feature = rng.normal(size=(len(rows), space.n_features))
    spread = space.spread(per_feature, rows)
    assert spread.shape == rows.shape
    np.testing.assert_allclose(space.sum_by_feature(spread), per_feature, rtol=0, atol=1e-12)
    # a categorical feature's value sits on its active one-hot column only
    for g, idx in enumerate(space.groups):
        if space.categorical[g]:
            block = spread[:, list(idx)]
            np.testing.assert_array_equal(block * (rows[:, list(idx)] == 0), 0.0)


def test_spread_keeps_value_of_unseen_category(adult):
    dataset, space, _ = adult
    raw = dataset.test.X.iloc[:2].copy()
    raw["workclass"] = "Martian"
    encoded = dataset.encode(raw)
    per_feature = np.arange(1.0, 1.0 + 2 * space.n_features).reshape(2, space.n_features)
    np.testing.assert_allclose(space.sum_by_feature(space.spread(per_feature, encoded)), per_feature, atol=1e-12)


def test_sum_by_feature_sums_each_group():
    space = FeatureSpace(names=("a", "b", "c"), groups=((0,), (1, 2, 3), (4,)), categorical=(False, True, False),
                         input_shape=(5,), kind="tabular")
    values = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, -1.0, 0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(space.sum_by_feature(values), [[1.0, 9.0, 5.0], [0.5, 0.0, 2.0]])


# ------------------------------------------------------------------ images


def test_patch_groups_on_8x8():
    space = patch_groups((1, 8, 8))
    assert space.kind == "image"
    assert space.input_shape == (1, 8, 8)
    assert space.n_features == 16
    assert all(len(g) == 4 for g in space.groups)
    assert not any(space.categorical)
    assert len(set(space.names)) == 16
    _covers_once(space)
    # each group is a 2×2 square of adjacent pixels
    for g in space.groups:
        rows, cols = np.unravel_index(np.asarray(g), (8, 8))
        assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
        assert rows.min() % 2 == 0 and cols.min() % 2 == 0
    mask = space.mask()[0]
    np.testing.assert_array_equal(mask[:2, :2], mask[0, 0])
    assert mask[0, 0] != mask[0, 2] and mask[0, 0] != mask[2, 0]


def test_patch_groups_take_all_channels_and_ragged_edges():
    space = patch_groups((3, 4, 4))
    assert space.n_features == 4 and all(len(g) == 12 for g in space.groups)
    _covers_once(space)
    mask = space.mask()
    np.testing.assert_array_equal(mask[0], mask[1])
    np.testing.assert_array_equal(mask[0], mask[2])
    odd = patch_groups((1, 5, 5))
    assert odd.n_features == 9
    _covers_once(odd)
    assert sorted(len(g) for g in odd.groups) == [1, 2, 2, 2, 2, 4, 4, 4, 4]


def test_apply_patches_all_on_all_off_and_some():
    space = patch_groups((1, 8, 8))
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(1, 8, 8)).astype(np.float32)
    baseline = rng.uniform(size=(1, 8, 8)).astype(np.float32)
    on = np.stack([np.ones(16), np.zeros(16), (np.arange(16) % 2).astype(float)])
    out = space.apply_patches(image, on, baseline)
    assert out.shape == (3, 1, 8, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out[1], baseline)
    mask = space.mask()
    keep = (mask % 2 == 1)
    np.testing.assert_array_equal(out[2][keep], image[keep])
    np.testing.assert_array_equal(out[2][~keep], baseline[~keep])
    # a scalar baseline fills the off patches
    np.testing.assert_array_equal(space.apply_patches(image, on[1:2], np.float32(0.25))[0], 0.25)
    # the image itself is not modified
    assert not np.shares_memory(out, image)
