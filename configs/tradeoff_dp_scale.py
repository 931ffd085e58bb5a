"""DP × compression at a deployable ε: 1,000 of 100,000 clients a round.

Base: configs/scale.py (synthetic_iid, N = 100,000 clients, K = 1,000 per
round, logistic model, FedAvgM, 50 rounds, cohort execution), non-private
and uncompressed; seeds 0 and 1. DP-FedAvg with C = 0.1 and δ = 1e-5 = 1/N;
ε after the 50 rounds (privacy/accounting.py) for σ 1.2 / 1.5 / 2.0 is
5.3 / 2.6 / 1.3:

  dp:         σ {1.2, 1.5, 2.0}, float32 uplink                    (3)
  dp_eden1:   the same σ, rotation + 1-bit EDEN uplink (unbiased)   (3)
  dp_eden2:   σ 1.2, rotation + 2-bit EDEN uplink                   (1)
  eden1:      no DP, the 1-bit EDEN uplink                          (1)

Every uplink codec here encodes the 600-float kernel (uplink.min_size 10);
the 10 biases go as float32 too small to compress. Federated Dropout is not
crossed: the logistic model has no hidden layer to drop, and cohort
execution refuses dropout.* (each client would need its own submodel).
9 settings × 2 seeds = 18 cells. DP noise is unseeded (as TFF's), so a DP
cell differs run to run. Results: docs/results/tradeoff_dp_scale/.
"""

from tff_compress import tradeoff_lib

SIGMAS = (1.2, 1.5, 2.0)
_DP = {'dp.mode': 'user'}
_EDEN = {'uplink.transform': 'rotation', 'uplink.quantizer': 'eden',
         'uplink.min_size': 10}
_EDEN1 = {**_EDEN, 'uplink.bits': 1}
_EDEN2 = {**_EDEN, 'uplink.bits': 2}


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_dp_scale'
  c.base = 'configs/scale.py'
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  c.grids.dp = grid({**_DP, 'dp.noise_multiplier': SIGMAS})
  c.grids.dp_eden1 = grid({**_DP, 'dp.noise_multiplier': SIGMAS, **_EDEN1})
  c.grids.dp_eden2 = grid({**_DP, 'dp.noise_multiplier': 1.2, **_EDEN2})
  c.grids.eden1 = grid(_EDEN1)
  return c
