"""Default trade-off sweep: Caldas et al. 2018's codec grid, per direction.

On the embedded task (configs/caldas_mnist.py, 30 rounds): for the broadcast
alone and for the uplink alone, transform {none, hadamard, kashin} x bits
{1, 2, 4, 8} x subsample {1, 0.5}, plus the uncompressed baseline: 49 cells,
about an hour on 2 cores. Results of this sweep: docs/results/tradeoff/.
Dropout and DP axes join as those capabilities land.
"""

import ml_collections

from tff_compress import tradeoff_lib


def _codec_grid(direction):
  grid = ml_collections.ConfigDict()
  grid[direction] = ml_collections.ConfigDict()
  grid[direction].transform = ('none', 'hadamard', 'kashin')
  grid[direction].bits = (1, 2, 4, 8)
  grid[direction].subsample = (1.0, 0.5)
  return grid


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0,)
  c.parallel = 1
  c.grids = ml_collections.ConfigDict()
  c.grids.down = _codec_grid('broadcast')
  c.grids.up = _codec_grid('uplink')
  return c
