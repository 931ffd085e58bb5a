"""DP × compression at a deployable ε: 1,000 of 100,000 clients a round.

Base: configs/scale.py (synthetic_iid, N = 100,000 clients, K = 1,000 per
round, logistic model, FedAvgM, 50 rounds, cohort execution), non-private
and uncompressed; seeds 0 and 1. DP-FedAvg with C = 0.1 and δ = 1e-5 = 1/N;
ε after the 50 rounds (privacy/accounting.py) for σ 1.2 / 1.5 / 2.0 is
5.3 / 2.6 / 1.3:

  dp:         σ {1.2, 1.5, 2.0}, float32 uplink                    (3)
  dp_eden1:   the same σ, rotation + 1-bit EDEN uplink (unbiased)   (3)
  clip:       σ 0: clipping to C alone, no noise (ε = ∞)            (1)
  dp_clip:    σ 1.2 with C {0.3, 1.0} (ε depends on σ, not on C;
              the noise σC/K grows with C)                          (2)
  eden1:      no DP, the 1-bit EDEN uplink                          (1)
  dense:      model.name=dense (one hidden layer of 64 ReLU units,
              4,554 parameters), no DP / σ 1.2, so that Federated
              Dropout has a layer to drop                            (2)
  dense_dropout: the same with dropout.keep 0.5 (each client its own
              half of the hidden units), no DP / σ 1.2               (2)

Every uplink codec here encodes the 600-float kernel (uplink.min_size 10);
the 10 biases go as float32 too small to compress. The logistic model
(LEAF's for this data) has no hidden layer to drop, so Federated Dropout is
crossed on the dense model, against its own dense cells.
15 settings × 2 seeds = 30 cells. DP noise is unseeded (as TFF's), so a DP
cell differs run to run. Results: docs/results/tradeoff_dp_scale/.
"""

from tff_compress import tradeoff_lib

SIGMAS = (1.2, 1.5, 2.0)
_DP = {'dp.mode': 'user'}
_EDEN = {'uplink.transform': 'rotation', 'uplink.quantizer': 'eden',
         'uplink.min_size': 10}
_EDEN1 = {**_EDEN, 'uplink.bits': 1}


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_dp_scale'
  c.base = 'configs/scale.py'
  c.seeds = (0, 1)
  c.parallel = 1
  grid = tradeoff_lib.grid
  c.grids.dp = grid({**_DP, 'dp.noise_multiplier': SIGMAS})
  c.grids.dp_eden1 = grid({**_DP, 'dp.noise_multiplier': SIGMAS, **_EDEN1})
  c.grids.clip = grid({**_DP, 'dp.noise_multiplier': 0.0})
  c.grids.dp_clip = grid({**_DP, 'dp.noise_multiplier': 1.2,
                          'dp.clip': (0.3, 1.0)})
  c.grids.eden1 = grid(_EDEN1)
  _DENSE = {'model.name': 'dense', 'dp.noise_multiplier': 1.2}
  c.grids.dense = grid({**_DENSE, 'dp.mode': ('none', 'user')})
  c.grids.dense_dropout = grid({**_DENSE, 'dp.mode': ('none', 'user'),
                                'dropout.keep': 0.5})
  return c
