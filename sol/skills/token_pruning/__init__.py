"""Token pruning: run blocks on fewer tokens, restore the rest. One module per method:

- ``token_pruning.merge`` — ToMe inside blocks: merge similar tokens (bipartite soft matching on
  the hidden states) before a block, restore each token's update after it;
- ``token_pruning.kv_merge`` — AsymRnR: merge keys and values only inside self-attention, every
  query kept (no pixelation);
- ``token_pruning.step_prune`` — across steps: score tokens, run blocks on the kept ones, reuse
  the dropped ones' residual from the last step they were computed.

Shared: :mod:`~sol.skills.token_pruning.matching` (destination grids, bipartite matching, merge and
restore), :mod:`~sol.skills.token_pruning._common` (block hooks, per-branch state, work counters),
:mod:`~sol.skills.token_pruning.search` (search spaces under the quality budget).
"""

from sol.skills.token_pruning.kv_merge import KVMergeConfig
from sol.skills.token_pruning.merge import TokenMergeConfig
from sol.skills.token_pruning.step_prune import StepPruneConfig

__all__ = ["KVMergeConfig", "StepPruneConfig", "TokenMergeConfig"]
