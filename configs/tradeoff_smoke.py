"""A one-minute sweep for tests: smoke model, 2 rounds, 2 x 2 + 2 + 1 cells.

Codec axes (uplink bits x broadcast bits), a Federated Dropout cell and a
DP-FedAvg cell, plus the baseline.
"""

import ml_collections

from tff_compress import tradeoff_lib


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_smoke'
  c.base = 'configs/smoke.py'
  c.rounds = 2
  c.seeds = (0,)
  c.grids = ml_collections.ConfigDict()
  c.grids.codec = ml_collections.ConfigDict()
  c.grids.codec.uplink = ml_collections.ConfigDict()
  c.grids.codec.uplink.transform = ('hadamard',)
  c.grids.codec.uplink.bits = (8, 1)
  c.grids.codec.broadcast = ml_collections.ConfigDict()
  c.grids.codec.broadcast.bits = (32, 4)
  c.grids.codec.broadcast.transform = ('kashin',)
  c.grids.dropout = ml_collections.ConfigDict()
  c.grids.dropout.dropout = ml_collections.ConfigDict()
  c.grids.dropout.dropout.keep = (0.5,)
  c.grids.dp = ml_collections.ConfigDict()
  c.grids.dp.dp = ml_collections.ConfigDict()
  c.grids.dp.dp.mode = ('user',)
  c.grids.dp.dp.noise_multiplier = (1.0,)
  c.grids.dp.dp.clip = (0.5,)
  return c
