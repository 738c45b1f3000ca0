"""The model core: data sets, architectures, training and safe checkpoints.

A data set (:func:`load_dataset`, :func:`load_table`) carries a :class:`DatasetSpec` (features
and their kinds, label and favourable outcome, protected attributes with privileged groups)
and the preprocessing fitted on its training split. Models are built by name
(:func:`build_model`), trained on encoded arrays (:func:`train`, or :func:`train_on` for a data
set with sensible defaults), and saved as safetensors + a JSON manifest (:func:`save_checkpoint`,
:func:`load_model`). Every user-caused problem raises a :class:`scrutiny.errors.ScrutinyError`.

The names below are imported on first use (PEP 562), so that ``scrutiny --help`` and the
light modules load without torch, pandas or scikit-learn.
"""

import importlib

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(["ARCHITECTURES", "build_model", "reconstruction_error"], "architectures"),
    **dict.fromkeys(["LoadedModel", "check_fits", "library_versions", "load_model", "save_checkpoint"], "checkpoint"),
    **dict.fromkeys(["RAW_FILES", "data_dir", "fetch"], "data_files"),
    **dict.fromkeys(["DATASETS", "Dataset", "Split", "load_dataset"], "datasets"),
    **dict.fromkeys(["ImagePreprocessor", "TabularPreprocessor"], "preprocessing"),
    **dict.fromkeys(["DEFAULT_ARCH", "TrainedModel", "train_on"], "recipes"),
    **dict.fromkeys(["DatasetSpec", "Feature", "ProtectedAttribute"], "spec"),
    **dict.fromkeys(["TrainResult", "evaluate", "predict_proba", "train"], "training"),
    "load_table": "user_data",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
