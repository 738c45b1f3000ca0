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

from scrutiny.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ARCHITECTURES", "build_model", "reconstruction_error"], "scrutiny.models.architectures"),
    **dict.fromkeys(["LoadedModel", "check_fits", "library_versions", "load_model", "save_checkpoint"], "scrutiny.models.checkpoint"),
    **dict.fromkeys(["RAW_FILES", "data_dir", "fetch"], "scrutiny.models.data_files"),
    **dict.fromkeys(["DATASETS", "Dataset", "Split", "load_dataset"], "scrutiny.models.datasets"),
    **dict.fromkeys(["ImagePreprocessor", "TabularPreprocessor"], "scrutiny.models.preprocessing"),
    **dict.fromkeys(["OnnxModel", "export_onnx", "load_onnx"], "scrutiny.models.onnx_model"),
    **dict.fromkeys(["DEFAULT_ARCH", "TrainedModel", "train_on"], "scrutiny.models.recipes"),
    **dict.fromkeys(["DatasetSpec", "Feature", "ProtectedAttribute"], "scrutiny.models.spec"),
    **dict.fromkeys(["TrainResult", "evaluate", "predict_proba", "train"], "scrutiny.models.training"),
    "load_table": "scrutiny.models.user_data",
    **dict.fromkeys(["Predictions", "load_predictions"], "scrutiny.models.predictions"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
