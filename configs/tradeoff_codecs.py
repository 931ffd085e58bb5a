"""Caldas et al. 2018's codec grid, per direction (no DP, no dropout).

On the embedded task (configs/caldas_mnist.py, 30 rounds), the uncompressed
baseline plus:
  down:        broadcast {none, hadamard} x bits {1, 2, 4, 8} x subsample
               {1, 0.5}                                           (16 cells)
  down_kashin: broadcast kashin x bits {1, 2, 4, 8}, subsample 1   (4 cells)
  up:          uplink {none, hadamard, kashin} x bits {1, 2, 4, 8},
               subsample 1                                        (12 cells)
  up_sub:      uplink hadamard x bits {1, 2}, subsample 0.5        (2 cells)
35 cells, about 75 minutes on 2 cores. Subsampled cells take ~2x longer (the
seeded index draw is a top-k over each tensor), which is why Kashin and most
uplink settings are swept at subsample 1 only. Results of this sweep:
docs/results/tradeoff_codecs/. The DP x compression x dropout sweep is
configs/tradeoff.py.
"""

from tff_compress import tradeoff_lib


def _codec_grid(direction, transforms, bits, subsample):
  return tradeoff_lib.grid({f'{direction}.transform': transforms,
                            f'{direction}.bits': bits,
                            f'{direction}.subsample': subsample})


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_codecs'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0,)
  c.parallel = 1
  bits = (1, 2, 4, 8)
  c.grids.down = _codec_grid('broadcast', ('none', 'hadamard'), bits,
                             (1.0, 0.5))
  c.grids.down_kashin = _codec_grid('broadcast', ('kashin',), bits, (1.0,))
  c.grids.up = _codec_grid('uplink', ('none', 'hadamard', 'kashin'), bits,
                           (1.0,))
  c.grids.up_sub = _codec_grid('uplink', ('hadamard',), (1, 2), (0.5,))
  return c
