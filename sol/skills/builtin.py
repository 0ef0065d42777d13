"""Every built-in technique package, imported once so its skills register."""

import importlib

PACKAGES = ("cache", "quantization")

for _name in PACKAGES:
    try:
        importlib.import_module(f"sol.skills.{_name}")
    except ModuleNotFoundError as e:
        # An optional third-party dependency missing must not take the other skills down
        # (plans naming its kinds then say the kind is unknown); a broken Sol import must.
        if (e.name or "").startswith("sol.") and e.name != f"sol.skills.{_name}":
            raise
