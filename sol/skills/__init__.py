"""Techniques: one package per skill family, registered through :mod:`sol.skills.base`."""

from sol.skills.base import (
    EXCLUSIVE_SEAMS,
    Applied,
    Handle,
    Seam,
    SearchContext,
    Skill,
    TechniqueConfig,
    apply_all,
    compose,
    config_from_dict,
    register_skill,
    registered_kinds,
    skill_for,
    skills_by_family,
)

__all__ = [
    "EXCLUSIVE_SEAMS",
    "Applied",
    "Handle",
    "SearchContext",
    "Seam",
    "Skill",
    "TechniqueConfig",
    "apply_all",
    "compose",
    "config_from_dict",
    "register_skill",
    "registered_kinds",
    "skill_for",
    "skills_by_family",
]
