"""FedGKT vs FedAvg on the same network, and feature compression (sweep).

Base: configs/fedgkt.py (FedGKT, float32 features). Cells: 8- and 4-bit
features; server distillation (beta 1, the paper's server loss); FedAvg-BN
(FedAvg averaging batch-norm statistics, the baseline) and TFF's FedAvg
(trainable variables only) on the whole ResNet-20, at equal rounds, the
former also with server momentum 0.9 and 1 or 2 local epochs; and
FedGKT vs FedAvg-BN (also with momentum and 2 epochs) with the paper's
ResNet-56 (57x fewer edge parameters, 9x fewer edge FLOPs). Two seeds each.

  ./bazelw run //tff_compress:tradeoff -- --config=configs/tradeoff_fedgkt.py

`--config=configs/tradeoff_fedgkt.py:features` sweeps the feature codec
alone: float32 against 2- and 1-bit features, uniform (per-sample min-max
stochastic rounding) vs eden (whole-sample rotation + Lloyd-Max levels),
same two seeds.
"""

from tff_compress import tradeoff_lib


def get_config(variant: str = ''):
  """The sweep; `variant='features'` the feature-codec sweep only."""
  tradeoff_lib.check_variant(
      'configs/tradeoff_fedgkt.py', variant, ('features',))
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_fedgkt'
  c.base = 'configs/fedgkt.py'
  c.seeds = (0, 1)
  grid = tradeoff_lib.grid
  if variant == 'features':
    c.name = 'tradeoff_fedgkt_features'
    c.grids.features = grid({'gkt.quantizer': ('uniform', 'eden'),
                             'gkt.bits': (2, 1)})
    return c
  c.grids.features = grid({'gkt.bits': (8, 4)})
  c.grids.server_kd = grid({'gkt.beta': 1.0})
  c.grids.fedavg = grid({'algorithm': ('fedavg_bn', 'fedavg')})
  # FedAvg-BN with server momentum (the project's FedAvgM default) and
  # one or two local epochs: the baseline at its best, not at SGD defaults.
  c.grids.fedavg_bn_m = grid({'algorithm': 'fedavg_bn',
                              'server.momentum': 0.9,
                              'client.epochs': (1, 2)})
  c.grids.resnet56 = grid({'model.name': 'resnet56',
                           'algorithm': ('fedgkt', 'fedavg_bn')})
  c.grids.resnet56_fedavg_m = grid({'model.name': 'resnet56',
                                    'algorithm': 'fedavg_bn',
                                    'server.momentum': 0.9,
                                    'client.epochs': 2})
  return c
