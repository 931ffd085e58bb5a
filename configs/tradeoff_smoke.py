"""A one-minute sweep for tests: smoke model, 2 rounds, 2 x 2 + 2 + 1 cells.

Codec axes (uplink bits x broadcast bits), a Federated Dropout cell and a
DP-FedAvg cell, plus the baseline.
"""

from tff_compress import tradeoff_lib


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_smoke'
  c.base = 'configs/smoke.py'
  c.rounds = 2
  c.seeds = (0,)
  grid = tradeoff_lib.grid
  c.grids.codec = grid({'uplink.transform': 'hadamard', 'uplink.bits': (8, 1),
                        'broadcast.bits': (32, 4),
                        'broadcast.transform': 'kashin'})
  c.grids.dropout = grid({'dropout.keep': 0.5})
  c.grids.dp = grid({'dp.mode': 'user', 'dp.noise_multiplier': 1.0,
                     'dp.clip': 0.5})
  return c
