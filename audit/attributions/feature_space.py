"""Interpretable features: the units people reason about, over the columns a model reads.

A tabular model reads one-hot columns; people think in original features (``workclass``,
not ``workclass=Private``). An 8×8 digit has 64 pixels; perturbation explainers work better
on small patches. A :class:`FeatureSpace` maps the model input to a matrix ``Z`` with one
column per interpretable feature and back:

- tabular: a numeric or binary feature is its (scaled) value; a categorical feature is the
  index of its active one-hot column, so a value taken from another row is always a valid
  category (KernelSHAP and LIME only ever copy values between rows);
- images: each patch is on (1, the pixel values) or off (0, the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureSpace", "tabular_space", "patch_groups"]


@dataclass(frozen=True)
class FeatureSpace:
    """Groups of model-input positions, one group per interpretable feature.

    Args:
        names: feature names, one per group.
        groups: flat input indices of each group.
        categorical: for each group, whether it is a one-hot block.
        input_shape: shape of one model input.
        kind: ``"tabular"`` or ``"image"``.
        binary: for each group, whether it is a single 0/1 column (a binary feature).
    """

    names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    categorical: tuple[bool, ...]
    input_shape: tuple[int, ...]
    kind: str
    binary: tuple[bool, ...] = ()

    def __post_init__(self):
        if not self.binary:
            object.__setattr__(self, "binary", (False,) * len(self.groups))

    @property
    def n_features(self) -> int:
        return len(self.groups)

    def mask(self) -> np.ndarray:
        """Integer array shaped like one input: the group id of each position (captum's
        ``feature_mask``)."""
        mask = np.empty(int(np.prod(self.input_shape)), dtype=np.int64)
        for g, idx in enumerate(self.groups):
            mask[list(idx)] = g
        return mask.reshape(self.input_shape)

    def sum_by_feature(self, values: np.ndarray) -> np.ndarray:
        """(N, *input_shape) → (N, n_features): attributions summed over each group."""
        flat = values.reshape(len(values), -1)
        return np.stack([flat[:, list(idx)].sum(axis=1) for idx in self.groups], axis=1)

    def spread(self, per_feature: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """(N, n_features) → (N, *input_shape): put each feature's value on its input
        positions (the active one-hot column, or evenly over a patch), so that
        :meth:`sum_by_feature` gives it back."""
        out = np.zeros((len(per_feature), int(np.prod(self.input_shape))))
        flat = inputs.reshape(len(inputs), -1)
        for g, group in enumerate(self.groups):
            idx = np.asarray(group, dtype=np.int64)
            if self.categorical[g]:
                block = flat[:, idx]
                active = block.argmax(axis=1)
                known = block.max(axis=1) > 0
                rows = np.flatnonzero(known)
                out[rows, idx[active[known]]] = per_feature[known, g]
                unknown = np.flatnonzero(~known)  # a category unseen in training: spread evenly
                out[np.ix_(unknown, idx)] = per_feature[unknown, g][:, None] / len(idx)
            else:
                out[:, idx] = per_feature[:, [g]] / len(idx)
        return out.reshape((len(per_feature), *self.input_shape))

    # tabular codes ---------------------------------------------------------------
    def to_codes(self, inputs: np.ndarray) -> np.ndarray:
        """Encoded rows → Z (one column per original feature; categories as indices,
        -1 for a category unseen in training)."""
        Z = np.empty((len(inputs), self.n_features))
        for g, idx in enumerate(self.groups):
            block = inputs[:, list(idx)]
            if self.categorical[g]:
                Z[:, g] = np.where(block.max(axis=1) > 0, block.argmax(axis=1), -1)
            else:
                Z[:, g] = block[:, 0]
        return Z

    def from_codes(self, Z: np.ndarray) -> np.ndarray:
        """Z → encoded rows (float32), inverse of :meth:`to_codes`."""
        X = np.zeros((len(Z), int(np.prod(self.input_shape))), dtype=np.float32)
        for g, idx in enumerate(self.groups):
            if self.categorical[g]:
                codes = np.rint(Z[:, g]).astype(np.int64)
                rows = np.flatnonzero(codes >= 0)
                X[rows, np.asarray(idx)[codes[rows]]] = 1.0
            else:
                X[:, idx[0]] = Z[:, g]
        return X

    # image patches ---------------------------------------------------------------
    def apply_patches(self, image: np.ndarray, on: np.ndarray, baseline: np.ndarray) -> np.ndarray:
        """One image, (M, n_features) on/off rows → M images with the off patches set to
        the baseline."""
        base = np.broadcast_to(baseline, image.shape).reshape(-1)
        pixels = np.repeat(image.reshape(1, -1), len(on), axis=0)
        mask = self.mask().reshape(-1)
        off = on[:, mask] < 0.5
        pixels[off] = np.broadcast_to(base, pixels.shape)[off]
        return pixels.reshape((len(on), *self.input_shape)).astype(np.float32)


def tabular_space(preprocessor) -> FeatureSpace:
    """The original features of a fitted :class:`~scrutiny.models.TabularPreprocessor`."""
    groups = preprocessor.feature_groups
    return FeatureSpace(
        names=tuple(groups),
        groups=tuple(tuple(idx) for idx in groups.values()),
        categorical=tuple(f.kind == "categorical" for f in preprocessor.spec.features),
        input_shape=(preprocessor.n_encoded,),
        kind="tabular",
        binary=tuple(f.kind == "binary" for f in preprocessor.spec.features),
    )


def patch_groups(image_shape: tuple[int, int, int], patch: int = 2) -> FeatureSpace:
    """Square patches of ``patch``×``patch`` pixels (all channels together) of an image."""
    c, h, w = image_shape
    index = np.arange(c * h * w).reshape(c, h, w)
    groups, names = [], []
    for top in range(0, h, patch):
        for left in range(0, w, patch):
            groups.append(tuple(index[:, top:top + patch, left:left + patch].reshape(-1).tolist()))
            names.append(f"patch r{top}c{left}")
    return FeatureSpace(
        names=tuple(names), groups=tuple(groups), categorical=(False,) * len(groups),
        input_shape=tuple(image_shape), kind="image",
    )
