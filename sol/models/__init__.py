"""Model families (adapters) and model loading: built-in names, presets, folders, the hub cache.

>>> from sol.models import load_model
>>> m = load_model("tiny-wan-random")  # doctest: +SKIP
>>> m.adapter.family
'wan'
"""

from sol.models import cosmos3, hunyuan_video15, ltx2, sana_video, wan  # noqa: F401  (register the adapters)
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
