"""Every built-in technique package, imported once so its skills register.

A package imports its optional third-party dependencies (triton, torchao, …) inside ``apply``
and declares them in ``Skill.packages``: it registers everywhere and says what to install where
they are missing. An import error here is a bug in Sol, never swallowed.
"""

import importlib

PACKAGES = ("cache", "quantization", "token_pruning", "fusion", "sparse_attention")

for _name in PACKAGES:
    importlib.import_module(f"sol.skills.{_name}")
