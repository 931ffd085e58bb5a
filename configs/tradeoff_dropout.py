"""Federated Dropout sweep: accuracy vs keep fraction, alone and with codecs.

On the embedded task (configs/caldas_mnist.py: Caldas CNN, 50 non-IID
clients, 10 per round), 30 rounds, seeds 0 and 1:
  alone:      dropout.keep {1, 0.875, 0.75, 0.625, 0.5}              (5 cells)
  no_rescale: dropout.keep 0.75 without activation rescaling          (1 cell)
  combined:   dropout.keep {0.75, 0.625, 0.5} x broadcast {4, 3}-bit
              (no transform) x uplink 1-bit Hadamard                 (6 cells)
  half_down, half_up: dropout.keep 0.5 with only the 4-bit broadcast or
              only the 1-bit Hadamard uplink (which codec p = 0.5 cannot
              take)                                                  (2 cells)
  mixed:      dropout.keep 0.75 with dense1 at 0.5 (its kernel is 97 % of
              the bytes) x broadcast {4, 3}-bit x uplink 1-bit Hadamard (2 cells)
16 cells x 2 seeds. Results: docs/results/dropout/ and docs/BENCHMARKS.md.
"""

from tff_compress import tradeoff_lib

KEEPS = (1.0, 0.875, 0.75, 0.625, 0.5)
_UP1 = {'uplink.transform': 'hadamard', 'uplink.bits': 1}


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_dropout'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  c.grids.alone = grid({'dropout.keep': KEEPS})
  c.grids.no_rescale = grid({'dropout.keep': 0.75, 'dropout.rescale': False})
  c.grids.combined = grid({'dropout.keep': KEEPS[2:],
                           'broadcast.transform': 'none',
                           'broadcast.bits': (4, 3), **_UP1})
  c.grids.half_down = grid({'dropout.keep': 0.5, 'broadcast.bits': 4})
  c.grids.half_up = grid({'dropout.keep': 0.5, **_UP1})
  c.grids.mixed = grid({'dropout.keep': 0.75, 'dropout.per_layer': 'dense1=0.5',
                        'broadcast.bits': (4, 3), **_UP1})
  return c
