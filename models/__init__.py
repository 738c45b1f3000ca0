"""The model core: data sets, architectures, training and safe checkpoints.

A data set (:func:`load_dataset`, :func:`load_table`) carries a :class:`DatasetSpec` (features
and their kinds, label and favourable outcome, protected attributes with privileged groups)
and the preprocessing fitted on its training split. Models are built by name
(:func:`build_model`), trained on encoded arrays (:func:`train`, or :func:`train_on` for a data
set with sensible defaults), and saved as safetensors + a JSON manifest (:func:`save_checkpoint`,
:func:`load_model`). Every user-caused problem raises a :class:`ScrutinyError`.
"""

from .architectures import ARCHITECTURES, build_model, reconstruction_error
from .checkpoint import LoadedModel, check_fits, library_versions, load_model, save_checkpoint
from .data_files import RAW_FILES, data_dir, fetch
from .datasets import DATASETS, Dataset, Split, load_dataset
from .errors import CheckpointError, DataError, InputError, ScrutinyError
from .preprocessing import ImagePreprocessor, TabularPreprocessor
from .recipes import DEFAULT_ARCH, TrainedModel, train_on
from .spec import DatasetSpec, Feature, ProtectedAttribute
from .training import TrainResult, evaluate, predict_proba, train
from .user_data import load_table

__all__ = [
    "ARCHITECTURES", "build_model", "reconstruction_error",
    "LoadedModel", "check_fits", "library_versions", "load_model", "save_checkpoint",
    "RAW_FILES", "data_dir", "fetch",
    "DATASETS", "Dataset", "Split", "load_dataset", "load_table",
    "CheckpointError", "DataError", "InputError", "ScrutinyError",
    "ImagePreprocessor", "TabularPreprocessor",
    "DEFAULT_ARCH", "TrainedModel", "train_on",
    "DatasetSpec", "Feature", "ProtectedAttribute",
    "TrainResult", "evaluate", "predict_proba", "train",
]
