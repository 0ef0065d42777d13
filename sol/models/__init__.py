"""Model families (adapters) and model loading: built-in names, presets, folders, the hub cache.

>>> from sol.models import load_model
>>> m = load_model("tiny-wan-random")  # doctest: +SKIP
>>> m.adapter.family
'wan'
"""

from sol.models import wan  # noqa: F401  (registers the Wan adapter)
from sol.models.base import (
    BLOCK_RESIDUALS,
    CROSS_ATTENTION,
    LINEAR_LAYERS,
    PRUNABLE_TOKENS,
    STEP_MODULATION,
    SWAPPABLE_ATTENTION,
    BlockIO,
    Fingerprint,
    ModelAdapter,
    adapter_for,
    fingerprint,
    register_adapter,
)
from sol.models.loading import BUILTIN_MODELS, LoadedModel, list_models, load_model, reference_model_path

__all__ = [
    "BLOCK_RESIDUALS",
    "CROSS_ATTENTION",
    "LINEAR_LAYERS",
    "PRUNABLE_TOKENS",
    "STEP_MODULATION",
    "SWAPPABLE_ATTENTION",
    "BUILTIN_MODELS",
    "BlockIO",
    "Fingerprint",
    "LoadedModel",
    "ModelAdapter",
    "adapter_for",
    "fingerprint",
    "list_models",
    "load_model",
    "reference_model_path",
    "register_adapter",
]
