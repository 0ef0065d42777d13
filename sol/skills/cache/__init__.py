"""Cache reuse across denoising steps: one module per technique, each registering its config.

- ``cache.text_kv`` — the prompt's cross-attention K/V computed once per generation (exact);
- ``cache.block_residual`` — First-Block-Cache / DBCache-style middle-block residual reuse;
- ``cache.step_output`` — TeaCache-style step skipping with a polynomial Sol calibrates itself;
- ``cache.diffusers_fbc`` / ``_pab`` / ``_taylorseer`` / ``_magcache`` — diffusers' hooks
  behind Sol configs (one diffusers cache per model; MagCache with Sol's calibration).

FasterCache is not offered: on Wan it fails (it expects cond/uncond batched in one call).
diffusers' ``TextKVCacheConfig`` is not offered: it only hooks NucleusMoE blocks (a no-op on Wan).
"""

from sol.skills.cache.block_residual import BlockResidualCacheConfig
from sol.skills.cache.calibration import Calibration, calibrate
from sol.skills.cache.diffusers_fbc import DiffusersFirstBlockCacheConfig
from sol.skills.cache.diffusers_magcache import DiffusersMagCacheConfig
from sol.skills.cache.diffusers_pab import DiffusersPABConfig
from sol.skills.cache.diffusers_taylorseer import DiffusersTaylorSeerConfig
from sol.skills.cache.step_output import StepOutputCacheConfig
from sol.skills.cache.text_kv import TextKVCacheConfig

__all__ = [
    "BlockResidualCacheConfig",
    "Calibration",
    "DiffusersFirstBlockCacheConfig",
    "DiffusersMagCacheConfig",
    "DiffusersPABConfig",
    "DiffusersTaylorSeerConfig",
    "StepOutputCacheConfig",
    "TextKVCacheConfig",
    "calibrate",
]
