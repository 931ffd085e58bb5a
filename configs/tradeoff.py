"""Default trade-off sweep on the embedded task: codecs per direction.

Grids (each the product of its axes; the sweep is their union plus the base
config as the uncompressed baseline):
  down: broadcast transform x bits
  up:   uplink transform x bits x subsample
  both: the combinations that looked best on their own in docs/BENCHMARKS.md
Dropout and DP axes join as those capabilities land.
"""

import ml_collections

from tff_compress import tradeoff_lib


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0,)
  c.parallel = 1
  c.grids = ml_collections.ConfigDict()
  c.grids.down = ml_collections.ConfigDict()
  c.grids.down.broadcast = ml_collections.ConfigDict()
  c.grids.down.broadcast.transform = ('hadamard', 'kashin')
  c.grids.down.broadcast.bits = (8, 4, 2)
  c.grids.up = ml_collections.ConfigDict()
  c.grids.up.uplink = ml_collections.ConfigDict()
  c.grids.up.uplink.transform = ('hadamard', 'kashin')
  c.grids.up.uplink.bits = (4, 2, 1)
  c.grids.up.uplink.subsample = (1.0, 0.5)
  return c
