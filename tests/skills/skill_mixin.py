"""The contract every registered skill meets, checked for each registered technique kind.

- its config round-trips through JSON and is resolved by kind alone;
- applied then reverted, the pipeline's outputs are bit-identical to the untouched one
  (irreversible skills: the evaluator's copy leaves the original untouched);
- applying the same config twice is refused or idempotent;
- the effect check refuses a conflicting pair (same exclusive seam) or a missing capability.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sol.bench.runner import generate
from sol.errors import ConflictError, SolError
from sol.skills import EXCLUSIVE_SEAMS, compose, config_from_dict, registered_kinds, skill_for


def _run(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class SkillContract:
    """Mix into a test class and set ``kinds`` (technique kinds) to check; fixtures from conftest."""

    kinds: tuple[str, ...] = ()

    def configs(self):
        kinds = registered_kinds()
        out = []
        for kind in self.kinds:
            cfg_type = kinds[kind]
            skill = skill_for(cfg_type.model_construct(kind=kind))
            out.extend(skill.examples())
        return out

    def test_json_roundtrip(self):
        for c in self.configs():
            data = json.loads(json.dumps(c.model_dump(mode="json")))
            assert config_from_dict(data) == c

    def test_revert_is_bit_identical(self, tiny, tiny_workload):
        base = _run(tiny.pipe, tiny_workload)
        for c in self.configs():
            skill = skill_for(c)
            if not skill.reversible:
                from sol.bench.evaluate import Evaluator

                ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
                res = ev.evaluate([c])
                assert res.ok, res.reason
            else:
                handle = skill.apply(tiny.pipe, c, tiny.adapter)
                _run(tiny.pipe, tiny_workload)
                handle.revert()
            assert _equal(_run(tiny.pipe, tiny_workload), base), f"{c.label()} left the pipeline changed"

    def test_apply_twice_refused_or_idempotent(self, tiny, tiny_workload):
        for c in self.configs():
            skill = skill_for(c)
            if not skill.reversible:
                continue  # applied to a copy by the evaluator; a second apply on a copy is a new copy
            h1 = skill.apply(tiny.pipe, c, tiny.adapter)
            try:
                once = _run(tiny.pipe, tiny_workload)
                try:
                    h2 = skill.apply(tiny.pipe, c, tiny.adapter)
                except SolError:
                    continue  # refused: fine
                try:
                    assert _equal(_run(tiny.pipe, tiny_workload), once), f"{c.label()} applied twice differs"
                finally:
                    h2.revert()
            finally:
                h1.revert()

    def test_effect_check_refuses_conflicts(self, tiny):
        all_kinds = registered_kinds()
        for c in self.configs():
            skill = skill_for(c)
            exclusive = skill.writes & EXCLUSIVE_SEAMS
            for seam in exclusive:
                for other_kind, other_type in all_kinds.items():
                    others = skill_for(other_type.model_construct(kind=other_kind)).examples()
                    other = next((o for o in others if o != c), None)
                    if other is None or seam not in skill_for(other).writes:
                        continue
                    with pytest.raises(ConflictError) as err:
                        compose([c, other], tiny.adapter)
                    msg = str(err.value)
                    assert c.kind in msg and other.kind in msg and seam.value in msg
            if skill.requires:

                class Lacking:
                    family = "none"
                    capabilities = frozenset()
                    transformer = tiny.pipe.transformer

                with pytest.raises(ConflictError, match="capability"):
                    compose([c], Lacking())
