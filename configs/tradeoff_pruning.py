"""Federated pruning sweep: accuracy vs sparsity against the dense model.

On the embedded task (configs/caldas_mnist.py: Caldas CNN, 50 non-IID
clients, 10 per round), 20 rounds, seed 0 (a reduced setting: the
measurement machine has 2 shared cores, loaded: a round cost 6-45 s):
  baseline:      the dense model (no pruning); one-shot export pruning
                 (mobile_export --prune_sparsity=S) is applied to its run
  unstructured:  every Conv2D/Dense kernel magnitude-pruned on the server to
                 50 %, 75 % or 90 % sparsity along tfmot's cubic
                 PolynomialDecay (begin 1, end 10): mask updates at rounds
                 4, 7 and 10, then 10 rounds under the final mask
  units:         the same schedule removing 50 % of the conv filters and
                 dense units (clients train a smaller model)
  late:          unstructured 50 %, 75 %, 90 % with mask updates at rounds
                 11 and 14 (begin 8, end 14), then 6 rounds under the final
                 mask: ranked by the magnitudes of a model that has learned
Results: docs/results/pruning/ and docs/BENCHMARKS.md ("Federated pruning").

`--config=configs/tradeoff_pruning.py:rounds30` is the same comparison at
the shipped config's 30 rounds with seeds 0, 1 and 2, the mask decided
once the dense model has learned (mask updates at rounds 12, 15, 18 and 21:
begin 12, end 21), 9 rounds under the final mask: unstructured 50 % and
90 % and units 50 %, against the dense baseline; and unstructured 50 % and
90 % with the mask final by round 15 (updates at 9, 12, 15) and 15 rounds
under it (`recovery`). Results: docs/results/pruning30/.

`--config=configs/tradeoff_pruning.py:rounds50` gives both sides 50 rounds
(seeds 0, 1, 2), the length at which the recovery grid's trend (more rounds
under the final mask, less loss) is tested: mask updates at rounds 12, 15,
18 and 21 (begin 9, end 21), then 29 rounds under the final mask, for
unstructured 50 %, 75 % and 90 % and units 50 %, against the dense model;
and 90 % along a longer ramp (`ramp`: updates every 3 rounds from 6 to
33, 17 rounds under the final mask). Results: docs/results/pruning50/.
"""

from tff_compress import tradeoff_lib

SCHEDULE = {'pruning.begin_round': 1, 'pruning.end_round': 10,
            'pruning.frequency': 3}
# The dense model only takes off around round 9 here: a mask ranked by the
# magnitudes of a model that has learned something.
LATE = {'pruning.begin_round': 8, 'pruning.end_round': 14,
        'pruning.frequency': 3}
LATE30 = {'pruning.begin_round': 12, 'pruning.end_round': 21,
          'pruning.frequency': 3}
RECOVERY30 = {'pruning.begin_round': 9, 'pruning.end_round': 15,
              'pruning.frequency': 3}
RECOVERY50 = {'pruning.begin_round': 9, 'pruning.end_round': 21,
              'pruning.frequency': 3}
# 90 % in ten smaller steps (Zhu and Gupta's gradual pruning over a longer
# span): updates at rounds 6, 9, ..., 33, then 17 rounds under the mask.
RAMP50 = {'pruning.begin_round': 3, 'pruning.end_round': 33,
          'pruning.frequency': 3}


def get_config(variant: str = ''):
  """The 20-round sweep; `variant='rounds30'` / `'rounds50'` the longer
  ones."""
  tradeoff_lib.check_variant(
      'configs/tradeoff_pruning.py', variant, ('rounds30', 'rounds50'))
  c = tradeoff_lib.default_sweep_config()
  c.base = 'configs/caldas_mnist.py'
  grid = tradeoff_lib.grid
  if variant == 'rounds30':
    c.name = 'tradeoff_pruning30'
    c.rounds = 30
    c.seeds = (0, 1, 2)
    c.parallel = 1
    c.grids.unstructured = grid({'pruning.target': (0.5, 0.9),
                                 'pruning.structure': 'unstructured',
                                 **LATE30})
    c.grids.units = grid({'pruning.target': 0.5,
                          'pruning.structure': 'units', **LATE30})
    c.grids.recovery = grid({'pruning.target': (0.5, 0.9),
                             'pruning.structure': 'unstructured',
                             **RECOVERY30})
    return c
  if variant == 'rounds50':
    c.name = 'tradeoff_pruning50'
    c.rounds = 50
    c.seeds = (0, 1, 2)
    c.parallel = 1
    c.grids.unstructured = grid({'pruning.target': (0.5, 0.75, 0.9),
                                 'pruning.structure': 'unstructured',
                                 **RECOVERY50})
    c.grids.units = grid({'pruning.target': 0.5,
                          'pruning.structure': 'units', **RECOVERY50})
    c.grids.ramp = grid({'pruning.target': 0.9,
                         'pruning.structure': 'unstructured', **RAMP50})
    return c
  c.name = 'tradeoff_pruning'
  c.rounds = 20
  c.seeds = (0,)
  c.parallel = 2
  c.grids.unstructured = grid({'pruning.target': (0.5, 0.75, 0.9),
                               'pruning.structure': 'unstructured',
                               **SCHEDULE})
  c.grids.units = grid({'pruning.target': 0.5, 'pruning.structure': 'units',
                        **SCHEDULE})
  c.grids.late = grid({'pruning.target': (0.5, 0.75, 0.9),
                       'pruning.structure': 'unstructured', **LATE})
  return c
