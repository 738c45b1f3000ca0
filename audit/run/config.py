"""The audit config: which families run and how, with defaults per data type.

A bare ``scrutiny audit`` does a complete audit; ``--config audit.toml`` changes what it
names. Every key is checked: an unknown key or a value of the wrong type is an error that
names the file, the key and what was expected. Example::

    seed = 0
    families = ["performance", "attributions", "robustness", "fairness"]
    chunk_rows = 64          # rows per unit of per-row work; with the seed it fixes every random
                             # draw, so results do not depend on the executor or its workers

    [attributions]
    methods = ["integrated_gradients", "kernel_shap", "lime"]
    samples = 200

    [robustness]
    eps = [0.1, 0.25, 0.5, 1.0]

    [robustness.certification]  # randomized smoothing: certified L2 robustness (off unless sigma is set)
    sigma = 0.25

    [fairness]
    attributes = ["sex", "race"]
    mitigate = "sex"
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from scrutiny.audit.attributions.registry import LIME_TARGETS, resolve_methods
from scrutiny.audit.robustness.registry import DEFAULT_ATTACKS, DEFAULT_QUERIES, DEFAULT_STEPS, NORMS, parse_attacks
from scrutiny.errors import InputError
from scrutiny.limits import check_int
from scrutiny.modality import modality
from scrutiny.toml_file import read_toml

from .executor import CHUNK_ROWS
from .family import FAMILIES

if TYPE_CHECKING:
    from scrutiny.models import Dataset

__all__ = ["AuditConfig", "AttributionsConfig", "CertificationConfig", "RobustnessConfig", "FairnessConfig",
           "load_config", "config_for", "default_config"]


@dataclass(frozen=True)
class AttributionsConfig:
    methods: list[str] = field(default_factory=list)    # default: per data type
    samples: int = 200                                  # test rows explained
    quality: bool = True                                # deletion, infidelity/sensitivity, randomisation
    quality_samples: int = 20                           # of those rows, how many the quality checks use
    stability_rows: int = 50                            # of those rows, how many are explained again (stability)
    n_boot: int = 1000                                  # resamples of the importance intervals
    top_k: int = 5                                      # k of the top-k overlap between methods
    lime_target: str = "probability"                    # what LIME fits: "probability" or "log_odds" (the others' score)


@dataclass(frozen=True)
class CertificationConfig:
    sigma: float = 0.0                                  # > 0 certifies by randomized smoothing with this noise
                                                        # (pixel units; tables: training sds); 0: no certification
    samples: int = 100                                  # of the attacked rows, how many are certified
    n0: int = 100                                       # noisy copies per row that choose the class
    n: int = 100_000                                    # ... and that bound its probability (Cohen et al.'s N)
    alpha: float = 0.001                                # a row's certificate is wrong with probability <= alpha
    radii: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # L2 radii of the table, plus the
                                                        # policy's gated one


@dataclass(frozen=True)
class RobustnessConfig:
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    eps: list[float] = field(default_factory=list)      # default: per data type, plus the policy's gated radius
    norm: str = "linf"
    samples: int = 500
    steps: int = DEFAULT_STEPS                          # APGD's (and PGD's) iterations: AutoAttack's
    restarts: int = 1
    queries: int = DEFAULT_QUERIES
    immutable: list[str] = field(default_factory=list)
    mutable: list[str] = field(default_factory=list)
    detector: bool = True                               # autoencoder out-of-distribution score of the examples
    certification: CertificationConfig = field(default_factory=CertificationConfig)


@dataclass(frozen=True)
class FairnessConfig:
    attributes: list[str] = field(default_factory=list)  # default: every protected attribute the data declares
    intersections: bool = True
    n_boot: int = 1000
    confidence: float = 0.95
    mitigate: str = ""                                   # a protected attribute: reweighing + equalized odds before/after


@dataclass(frozen=True)
class AuditConfig:
    seed: int = 0
    families: list[str] = field(default_factory=list)   # default: every family the data supports
    chunk_rows: int = CHUNK_ROWS                        # rows per unit of per-row work: fixes the random draws
    attributions: AttributionsConfig = field(default_factory=AttributionsConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def default_config(task: str, *, fairness: bool) -> AuditConfig:
    """The complete audit for a data type (its :class:`~scrutiny.modality.Modality` defaults);
    ``fairness`` when the data declares protected attributes."""
    kind = modality(task)
    return AuditConfig(
        families=[f for f in FAMILIES if f != "fairness" or fairness],
        attributions=AttributionsConfig(methods=list(kind.default_methods)),
        robustness=RobustnessConfig(eps=list(kind.default_eps)),
    )


ConfigSource = AuditConfig | Mapping[str, Any] | str | os.PathLike[str] | None


def load_config(path: ConfigSource, *, task: str, fairness: bool, protected: tuple[str, ...] = (),
                mitigation: bool = True) -> AuditConfig:
    """The defaults for ``task``, with what ``path`` sets, checked.

    Args:
        path: a TOML file, a dict with the same keys (``{"attributions": {"samples": 50}}``),
            an :class:`AuditConfig` (its empty lists mean the data type's defaults), or None
            for the defaults.
        task: a data type of :data:`~scrutiny.modality.MODALITIES` (``tabular``, ``image``):
            picks the defaults.
        fairness: whether the data supports the fairness family.
        protected: the data's protected attributes, which ``fairness.attributes`` and
            ``fairness.mitigate`` may name.
        mitigation: whether the data supports ``fairness.mitigate`` (a binary label; reweighing
            and equalized odds are defined for two classes only).

    Example:
        >>> load_config({"robustness": {"eps": [0.5]}}, task="tabular", fairness=False).robustness.eps
        [0.5]
    """
    defaults = default_config(task, fairness=fairness)

    def checked(config: AuditConfig, where: str) -> AuditConfig:
        return _check(config, where, task=task, fairness=fairness, protected=protected, mitigation=mitigation)

    if path is None:
        return checked(defaults, "the default config")
    if isinstance(path, AuditConfig):
        return checked(_defaults_for_empty(path, defaults), "config")
    if isinstance(path, Mapping):
        return checked(_merge(defaults, dict(path), "config"), "config")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"config must be an AuditConfig, a dict or a path, got {type(path).__name__}")
    where = f"config {path}"
    return checked(_merge(defaults, read_toml(path, "config"), where), where)


def config_for(dataset: Dataset, config: ConfigSource = None) -> AuditConfig:
    """The config for auditing ``dataset``: its data type's defaults with what ``config`` (a TOML
    file, a dict or an :class:`AuditConfig`) sets; the fairness family only where the data has
    protected attributes and a favourable outcome (two classes, or a multiclass label with a
    favourable class set, compared one-vs-rest); mitigation only for two classes.

    Example:
        >>> config = config_for(load_dataset("adult"), {"attributions": {"samples": 50}})  # doctest: +SKIP
        >>> config.families, config.attributions.samples  # doctest: +SKIP
        (['performance', 'attributions', 'robustness', 'fairness'], 50)
    """
    spec = dataset.spec
    has_groups = modality(spec.task).fairness and bool(spec.favourable_indices) and bool(spec.protected)
    return load_config(config, task=spec.task, fairness=has_groups, protected=tuple(p.name for p in spec.protected),
                       mitigation=spec.is_binary)


def _defaults_for_empty(config: AuditConfig, defaults: AuditConfig) -> AuditConfig:
    """The lists an AuditConfig leaves empty (families, methods, ε) filled with the data type's defaults."""
    return replace(
        config,
        families=config.families or defaults.families,
        attributions=replace(config.attributions, methods=config.attributions.methods or defaults.attributions.methods),
        robustness=replace(config.robustness, eps=config.robustness.eps or defaults.robustness.eps),
    )


def _merge(config, document: dict, where: str, section: str = ""):
    known = {f.name: f for f in fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in document.items():
        name = f"{section}{key}"
        if key not in known:
            raise InputError(f"{where}: unknown key '{name}'; expected one of {', '.join(section + k for k in known)}")
        expected = hints[key]
        if hasattr(expected, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise InputError(f"{where}: '{name}' must be a table ([{name}])")
            changes[key] = _merge(getattr(config, key), value, where, f"{name}.")
        else:
            changes[key] = _typed(value, expected, where, name)
    return replace(config, **changes)


def _typed(value, expected, where: str, name: str):
    origin = typing.get_origin(expected)
    if origin is list:
        (item,) = typing.get_args(expected)
        if not isinstance(value, list):
            raise InputError(f"{where}: '{name}' must be a list of {item.__name__}, got {value!r}")
        return [_typed(v, item, where, name) for v in value]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is float and isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: '{name}' must be a finite number, got {value}")
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        kind = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}[expected]
        raise InputError(f"{where}: '{name}' must be {kind}, got {value!r}")
    return value


def _check(config: AuditConfig, where: str, *, task: str, fairness: bool, protected: tuple[str, ...],
           mitigation: bool = True) -> AuditConfig:
    """Values each key accepts, beyond its type; method and attack names resolved."""
    _check_families(config.families, where, fairness=fairness)
    _check_ints(config, where)
    _check_fairness(config, where, protected=protected, mitigation=mitigation)
    _check_robustness(config, where)
    if config.attributions.lime_target not in LIME_TARGETS:
        raise InputError(f"{where}: 'attributions.lime_target' must be {' or '.join(map(repr, LIME_TARGETS))}, "
                         f"got {config.attributions.lime_target!r}")
    return _resolve_names(config, where)


def _check_families(families: list[str], where: str, *, fairness: bool) -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise InputError(f"{where}: families {unknown or '(empty)'}: expected some of {', '.join(FAMILIES)}")
    if "fairness" in families and not fairness:
        raise InputError(f"{where}: the fairness family needs a tabular data set with protected attributes and a "
                         "favourable outcome (a binary label, or a multiclass label with a favourable class set); "
                         "leave it out of families")


def _check_ints(config: AuditConfig, where: str) -> None:
    a, r, f = config.attributions, config.robustness, config.fairness
    for name, value in (("seed", config.seed), ("chunk_rows", config.chunk_rows), ("attributions.samples", a.samples),
                        ("attributions.quality_samples", a.quality_samples),
                        ("attributions.stability_rows", a.stability_rows), ("attributions.top_k", a.top_k),
                        ("attributions.n_boot", a.n_boot), ("robustness.samples", r.samples),
                        ("robustness.steps", r.steps), ("robustness.restarts", r.restarts),
                        ("robustness.queries", r.queries), ("robustness.certification.samples", r.certification.samples),
                        ("robustness.certification.n0", r.certification.n0),
                        ("robustness.certification.n", r.certification.n), ("fairness.n_boot", f.n_boot)):
        check_int(name, value, where=where, limit="importance_boot" if name == "attributions.n_boot" else None)


def _check_fairness(config: AuditConfig, where: str, *, protected: tuple[str, ...], mitigation: bool = True) -> None:
    f = config.fairness
    if not 0 < f.confidence < 1:
        raise InputError(f"{where}: 'fairness.confidence' must lie between 0 and 1, got {f.confidence}")
    if "fairness" not in config.families:
        return
    for key, names in (("fairness.attributes", f.attributes), ("fairness.mitigate", [f.mitigate] if f.mitigate else [])):
        for name in names:
            if name not in protected:
                raise InputError(f"{where}: '{key}' names '{name}', which is not a protected attribute of the data; "
                                 f"expected one of {', '.join(protected)}")
    if f.mitigate and not mitigation:
        raise InputError(f"{where}: 'fairness.mitigate': reweighing and equalized odds need a binary label; this "
                         "data set is multiclass (fairness itself runs one-vs-rest); leave 'mitigate' out")


def _check_robustness(config: AuditConfig, where: str) -> None:
    r = config.robustness
    if r.norm not in NORMS:
        raise InputError(f"{where}: 'robustness.norm' must be {' or '.join(NORMS)}, got {r.norm!r}")
    if any(e <= 0 for e in r.eps) or ("robustness" in config.families and not r.eps):
        raise InputError(f"{where}: 'robustness.eps' must be positive radii, got {r.eps}")
    c, key = r.certification, "robustness.certification"
    if c.sigma < 0:
        raise InputError(f"{where}: '{key}.sigma' must be a number > 0 (the noise standard deviation), or 0 for no "
                         f"certification; got {c.sigma}")
    if not 0 < c.alpha < 1:
        raise InputError(f"{where}: '{key}.alpha' must lie between 0 and 1 (such as 0.001), got {c.alpha}")
    if c.n0 > c.n:
        raise InputError(f"{where}: '{key}.n0' ({c.n0:,}) is more than '{key}.n' ({c.n:,}): the class is chosen on a "
                         "small first sample and bounded on a larger fresh one")
    if any(radius < 0 for radius in c.radii):
        raise InputError(f"{where}: '{key}.radii' must be L2 radii >= 0, got {c.radii}")


def _resolve_names(config: AuditConfig, where: str) -> AuditConfig:
    """Families in their canonical order, method and attack names resolved, the ε grid sorted."""
    a, r = config.attributions, config.robustness
    try:
        methods = resolve_methods(a.methods)
        attacks = list(parse_attacks(r.attacks))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    certification = replace(r.certification, radii=sorted(set(r.certification.radii)))
    return replace(config, families=[x for x in FAMILIES if x in config.families],
                   attributions=replace(a, methods=methods),
                   robustness=replace(r, attacks=attacks, eps=sorted(set(r.eps)), certification=certification))
