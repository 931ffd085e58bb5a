"""A one-minute sweep for tests: smoke model, 2 rounds, 2 x 2 + 1 cells."""

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
  return c
