"""The codec sweep re-run with EDEN-class codecs (issue 20), 3 seeds.

On the embedded task (configs/caldas_mnist.py: Caldas CNN, 50 non-IID
clients, 10 per round), 30 rounds, seeds 0, 1, 2, every codec a whole-tensor
rotation (`transform='rotation'`) followed by EDEN's Lloyd-Max quantizer:
  baseline:  float32 both ways (the base config)
  down:      broadcast (bits, sent fraction) in (1, 1), (2, 1), (3, 1) and
             (2, 0.9) -- 32x, 16x, 10.7x and 17.8x fewer coordinate bits;
             minimum-error scale, deterministic (scale='auto')
  up:        uplink (1, 0.3), (1, 0.15), (2, 0.15) -- about 107x, 213x and
             107x; unbiased scale
  dropout:   Federated Dropout keep 0.75 with the (2, 0.8) broadcast and the
             (1, 0.3) uplink
  dropout_625: keep 0.625 with the (2, 1) broadcast and the (1, 0.3)
             uplink (added after the first cells: the 0.8 broadcast
             fraction, not dropout, cost the accuracy)
The issue's targets, each within 0.5 pt of the baseline: downlink alone
>= 16x, uplink alone >= 100x, with dropout >= 32x down, >= 150x up and
>= 1.7x fewer client FLOPs. Results: docs/results/tradeoff_eden/ and
docs/BENCHMARKS.md ("Codecs end to end"). The Caldas-era grid is
configs/tradeoff_codecs.py.
"""

from tff_compress import tradeoff_lib

_EDEN = {'transform': 'rotation', 'quantizer': 'eden'}


def codec(direction: str, bits: int, sent: float) -> dict:
  """Overrides for one direction's rotation + EDEN codec."""
  keys = {**_EDEN, 'bits': bits, 'subsample': sent}
  return {f'{direction}.{k}': v for k, v in keys.items()}


DOWN = ((1, 1.0), (2, 1.0), (3, 1.0), (2, 0.9))
UP = ((1, 0.3), (1, 0.15), (2, 0.15))


def get_config():
  c = tradeoff_lib.default_sweep_config()
  c.name = 'tradeoff_eden'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 30
  c.seeds = (0, 1, 2)
  c.parallel = 1
  grid = tradeoff_lib.grid
  for bits, sent in DOWN:
    name = f'down_{bits}b_{round(sent * 100)}'
    c.grids[name] = grid(codec('broadcast', bits, sent))
  for bits, sent in UP:
    c.grids[f'up_{bits}b_{round(sent * 100)}'] = grid(codec('uplink', bits,
                                                            sent))
  c.grids.dropout = grid({'dropout.keep': 0.75,
                          **codec('broadcast', 2, 0.8),
                          **codec('uplink', 1, 0.3)})
  c.grids.dropout_625 = grid({'dropout.keep': 0.625,
                              **codec('broadcast', 2, 1.0),
                              **codec('uplink', 1, 0.3)})
  return c
