"""The default trade-off sweep: DP x compression x Federated Dropout.

Base: configs/many_clients.py (the embedded digits as N = 1,000 IID clients
of 4 examples, K = 100 per round, dense model, FedAvgM), 30 rounds, two
seeds, non-private and uncompressed. The grids (each a product of its axes):

  dp:          DP-FedAvg, σ {0.3, 0.5, 0.7, 1.0, 1.5}, float32 uplink (5)
  dp_up4:      the same σ, 4-bit Hadamard uplink                     (5)
  dp_up2:      σ {0.7, 1.0}, 2-bit Kashin uplink                     (2)
  dp_up1:      σ {0.7, 1.0}, 1-bit Hadamard uplink, half the coords  (2)
  up4, up1:    no DP, the 4-bit and the 1-bit uplink above           (2)
  down:        no DP, broadcast 8 | 4 bits                           (2)
  dropout:     no DP, Federated Dropout keep {0.75, 0.5}             (2)
  dp_dropout:  σ 1.0, keep {0.75, 0.5}                               (2)
  dp_combined: σ {0.7, 1.0}, keep 0.75, 8-bit broadcast, 4-bit uplink (2)
  combined:    no DP, keep 0.75, 8-bit broadcast, 1-bit uplink       (1)

26 settings (with the baseline) x 2 seeds = 52 cells, about an hour on 2
cores. ε is at δ = 1e-5 (RDP, K of N sampled uniformly without replacement,
replace-one); it depends only on σ, K/N and the rounds. Results: docs/results/tradeoff/.
Caldas' per-direction codec table is configs/tradeoff_codecs.py.
"""

import ml_collections

from tff_compress import tradeoff_lib

SIGMAS = (0.3, 0.5, 0.7, 1.0, 1.5)
_UPLINKS = {  # transform, bits, subsample
    'up4': ('hadamard', 4, 1.0),
    'up2': ('kashin', 2, 1.0),
    'up1': ('hadamard', 1, 0.5),
}


def _grid(sigmas=None, uplink=None, broadcast_bits=None, keep=None):
  """One grid: DP noise levels (None = no DP) x fixed codec/dropout values."""
  g = ml_collections.ConfigDict()
  if sigmas is not None:
    g.dp = ml_collections.ConfigDict()
    g.dp.mode = ('user',)
    g.dp.noise_multiplier = tuple(sigmas)
  if uplink is not None:
    transform, bits, subsample = _UPLINKS[uplink]
    g.uplink = ml_collections.ConfigDict()
    g.uplink.transform = (transform,)
    g.uplink.bits = (bits,)
    g.uplink.subsample = (subsample,)
  if broadcast_bits is not None:
    g.broadcast = ml_collections.ConfigDict()
    g.broadcast.bits = tuple(broadcast_bits)
  if keep is not None:
    g.dropout = ml_collections.ConfigDict()
    g.dropout.keep = tuple(keep)
  return g


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff'
  c.base = 'configs/many_clients.py'
  c.rounds = 30
  c.seeds = (0, 1)
  c.parallel = 1
  c.grids = ml_collections.ConfigDict()
  c.grids.dp = _grid(sigmas=SIGMAS)
  c.grids.dp_up4 = _grid(sigmas=SIGMAS, uplink='up4')
  c.grids.dp_up2 = _grid(sigmas=(0.7, 1.0), uplink='up2')
  c.grids.dp_up1 = _grid(sigmas=(0.7, 1.0), uplink='up1')
  c.grids.up4 = _grid(uplink='up4')
  c.grids.up1 = _grid(uplink='up1')
  c.grids.down = _grid(broadcast_bits=(8, 4))
  c.grids.dropout = _grid(keep=(0.75, 0.5))
  c.grids.dp_dropout = _grid(sigmas=(1.0,), keep=(0.75, 0.5))
  c.grids.dp_combined = _grid(sigmas=(0.7, 1.0), uplink='up4',
                              broadcast_bits=(8,), keep=(0.75,))
  c.grids.combined = _grid(uplink='up1', broadcast_bits=(8,), keep=(0.75,))
  return c
