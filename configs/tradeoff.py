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

`--config=configs/tradeoff.py:eden` re-runs the DP cells at σ 1.0 and 1.5
(ε 32.3 and 13.4) with EDEN uplinks beside float32, same seeds:

  dp_eden1:    rotation + 1-bit EDEN (unbiased)                      (2)
  dp_eden2:    rotation + 2-bit EDEN on 0.9 of the rotated
               coordinates, the 640-float logits kernel included
               (uplink.min_size 100): >= 16x                          (2)

6 settings x 2 seeds. Results: docs/results/tradeoff_dp_eden/.
"""

from tff_compress import tradeoff_lib

SIGMAS = (0.3, 0.5, 0.7, 1.0, 1.5)
_DP = {'dp.mode': 'user'}
# 4-bit Hadamard; 2-bit Kashin; 1-bit Hadamard with half the coordinates.
_UP4 = {'uplink.transform': 'hadamard', 'uplink.bits': 4,
        'uplink.subsample': 1.0}
_UP2 = {'uplink.transform': 'kashin', 'uplink.bits': 2,
        'uplink.subsample': 1.0}
_UP1 = {'uplink.transform': 'hadamard', 'uplink.bits': 1,
        'uplink.subsample': 0.5}
_EDEN = {'uplink.transform': 'rotation', 'uplink.quantizer': 'eden'}
_EDEN1 = {**_EDEN, 'uplink.bits': 1}
_EDEN2 = {**_EDEN, 'uplink.bits': 2, 'uplink.subsample': 0.9,
          'uplink.min_size': 100}


def get_config(variant: str = ''):
  """The default sweep; `variant='eden'` its DP cells with EDEN uplinks."""
  tradeoff_lib.check_variant('configs/tradeoff.py', variant, ('eden',))
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff'
  c.base = 'configs/many_clients.py'
  c.rounds = 30
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  if variant == 'eden':
    c.name = 'tradeoff_dp_eden'
    sigmas = (1.0, 1.5)
    c.grids.dp = grid({**_DP, 'dp.noise_multiplier': sigmas})
    c.grids.dp_eden1 = grid({**_DP, 'dp.noise_multiplier': sigmas, **_EDEN1})
    c.grids.dp_eden2 = grid({**_DP, 'dp.noise_multiplier': sigmas, **_EDEN2})
    return c
  c.grids.dp = grid({**_DP, 'dp.noise_multiplier': SIGMAS})
  c.grids.dp_up4 = grid({**_DP, 'dp.noise_multiplier': SIGMAS, **_UP4})
  c.grids.dp_up2 = grid({**_DP, 'dp.noise_multiplier': (0.7, 1.0), **_UP2})
  c.grids.dp_up1 = grid({**_DP, 'dp.noise_multiplier': (0.7, 1.0), **_UP1})
  c.grids.up4 = grid(_UP4)
  c.grids.up1 = grid(_UP1)
  c.grids.down = grid({'broadcast.bits': (8, 4)})
  c.grids.dropout = grid({'dropout.keep': (0.75, 0.5)})
  c.grids.dp_dropout = grid({**_DP, 'dp.noise_multiplier': 1.0,
                             'dropout.keep': (0.75, 0.5)})
  c.grids.dp_combined = grid({**_DP, 'dp.noise_multiplier': (0.7, 1.0),
                              **_UP4, 'broadcast.bits': 8,
                              'dropout.keep': 0.75})
  c.grids.combined = grid({**_UP1, 'broadcast.bits': 8,
                           'dropout.keep': 0.75})
  return c
