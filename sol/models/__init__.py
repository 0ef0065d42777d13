"""Model families (adapters) and model loading: built-in names, presets, folders, the hub cache.

>>> from sol.models import load_model
>>> m = load_model("tiny-wan-random")  # doctest: +SKIP
>>> m.adapter.family
'wan'
"""

from sol.models import wan  # noqa: F401  (registers the Wan adapter)
from sol.models.base import (
    BlockIO,
    Capability,
    Fingerprint,
    ModelAdapter,
    adapter_for,
    denoisers,
    fingerprint,
    gather_tokens,
    register_adapter,
)
from sol.models.loading import BUILTIN_MODELS, LoadedModel, list_models, load_model, reference_model_path

__all__ = [
    "BUILTIN_MODELS",
    "BlockIO",
    "Capability",
    "Fingerprint",
    "LoadedModel",
    "ModelAdapter",
    "adapter_for",
    "denoisers",
    "fingerprint",
    "gather_tokens",
    "list_models",
    "load_model",
    "reference_model_path",
    "register_adapter",
]
