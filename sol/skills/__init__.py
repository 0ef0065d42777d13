"""Techniques: one package per skill family, registered through :mod:`sol.skills.base`."""

from sol.hooks import Handle, Installation
from sol.skills.base import (
    EXCLUSIVE_SEAMS,
    Applied,
    Phase,
    Seam,
    SearchContext,
    Skill,
    TechniqueConfig,
    apply_all,
    capability_refusal,
    compose,
    config_from_dict,
    register_skill,
    registered_kinds,
    skill_for,
    skills_by_family,
    unregister_skill,
)

__all__ = [
    "EXCLUSIVE_SEAMS",
    "Applied",
    "Handle",
    "Installation",
    "Phase",
    "SearchContext",
    "Seam",
    "Skill",
    "TechniqueConfig",
    "apply_all",
    "capability_refusal",
    "compose",
    "config_from_dict",
    "register_skill",
    "registered_kinds",
    "skill_for",
    "skills_by_family",
    "unregister_skill",
]
