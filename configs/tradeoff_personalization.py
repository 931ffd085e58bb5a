"""Personalization sweep: FedAvg + fine-tuning vs FedPer vs FedProx, non-IID.

Base: configs/personalization.py (Caldas CNN, 50 clients, 10 per round,
FedAvgM, every client holding out 25 %, fine-tuning evaluation of all 50
clients after the last round), 30 rounds (reduced from 50 for this shared
2-core machine), seeds 0 and 1, on two strongly non-IID splits:
  shards, 2 per client (the base)    and    Dirichlet alpha = 0.1 (dir_*).
  baseline / dir:        FedAvg, 1 local epoch                      (2 cells)
  fedper / dir_fedper:   FedPer, the head local                     (2 cells)
  e5 / dir_e5:           FedAvg with 5 local epochs (client drift) and
                         FedProx mu {0.01, 0.1, 1} at 5 epochs       (8 cells)
12 cells x 2 seeds. Results: docs/results/personalization/, BENCHMARKS.md.

`--config=configs/tradeoff_personalization.py:fedper` keeps the baseline and
the fedper grid only (FedAvg + fine-tuning vs FedPer on the shards split:
the cells docs/BENCHMARKS.md measured, with `--config.rounds=20`).
`...:fedprox` keeps the shards split's e5 and e5_fedprox grids, with mu
0.01 and 0.1 (FedProx vs FedAvg under client drift; measured with
`--config.rounds=20`).
"""

from tff_compress import tradeoff_lib

MUS = (0.01, 0.1, 1.0)
_DIR = {'data.partition': 'dirichlet', 'data.dirichlet_alpha': 0.1}


def get_config(cells: str = ''):
  """The sweep; `cells='fedper'` / `'fedprox'` keep those grids only."""
  tradeoff_lib.check_variant(
      'configs/tradeoff_personalization.py', cells, ('fedper', 'fedprox'))
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_personalization'
  c.base = 'configs/personalization.py'
  c.rounds = 30
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  c.grids.fedper = grid({'algorithm': 'fedper'})
  c.grids.e5 = grid({'client.epochs': 5})
  c.grids.e5_fedprox = grid({'client.epochs': 5, 'client.work': 'fedprox',
                             'client.proximal_strength': MUS})
  c.grids.dir = grid(_DIR)
  c.grids.dir_fedper = grid({**_DIR, 'algorithm': 'fedper'})
  c.grids.dir_e5 = grid({**_DIR, 'client.epochs': 5})
  c.grids.dir_e5_fedprox = grid({**_DIR, 'client.epochs': 5,
                                 'client.work': 'fedprox',
                                 'client.proximal_strength': MUS})
  if cells == 'fedprox':
    c.grids.e5_fedprox.client.proximal_strength = MUS[:2]
  keep = {'': None, 'fedper': ('fedper',),
          'fedprox': ('e5', 'e5_fedprox')}[cells]
  if keep:
    for name in list(c.grids.keys()):
      if name not in keep:
        del c.grids[name]
  return c
