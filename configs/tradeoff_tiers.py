"""Device tiers sweep: a three-tier fleet against single-width training.

On the embedded task (configs/caldas_mnist.py: Caldas CNN, 50 non-IID
clients, 10 per round), 30 rounds, seeds 0 and 1 (a reduced setting: the
measurement machine has 2 shared cores):
  baseline:    every client trains the full network (no tiers)
  mix:         a third of the clients each at widths 1, 1/2, 1/4
               ('high', 'mid', 'low'), nested (HeteroFL) or random slices
  no_rescale:  the nested mix without the activation scaler
  low_alone:   the mix's 'low' clients alone (the other tiers sit every
               round out): what the 1/4-width phones learn by themselves
  all_low:     every client at width 1/4 (the one width the whole fleet
               could afford)
  mix_codecs:  the nested mix with a 4-bit broadcast and a 1-bit Hadamard
               uplink
Each tier's deployed model is evaluated after the last round (results.md's
device-tier table). Results: docs/results/tiers/ and docs/BENCHMARKS.md.

`--config=configs/tradeoff_tiers.py:core` keeps the baseline, mix and
low_alone grids only (the cells docs/BENCHMARKS.md measured, with
`--config.rounds=20 --config.seeds='(0,)'`).
"""

from tff_compress import tradeoff_lib

MIX = 'high:1:1.0, mid:1:0.5, low:1:0.25'


CORE = ('mix', 'low_alone')


def get_config(cells: str = ''):
  """The sweep; `cells='core'` keeps the `CORE` grids only."""
  tradeoff_lib.check_variant('configs/tradeoff_tiers.py', cells, ('core',))
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_tiers'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  c.grids.mix = grid({'tiers.mix': MIX,
                      'tiers.slicing': ('nested', 'random')})
  c.grids.no_rescale = grid({'tiers.mix': MIX, 'tiers.rescale': False})
  c.grids.low_alone = grid({'tiers.mix': MIX, 'tiers.train_only': 'low'})
  c.grids.all_low = grid({'tiers.mix': 'low:1:0.25'})
  c.grids.mix_codecs = grid({'tiers.mix': MIX, 'broadcast.transform': 'none',
                             'broadcast.bits': 4,
                             'uplink.transform': 'hadamard',
                             'uplink.bits': 1})
  if cells == 'core':
    for name in list(c.grids.keys()):
      if name not in CORE:
        del c.grids[name]
  return c
