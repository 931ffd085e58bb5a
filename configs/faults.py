"""The default task (configs/caldas_mnist.py) with unreliable clients.

Each round the server samples ceil(10 * 1.4) = 14 of the 50 clients and
aggregates the first 10 reports that arrive within 30 simulated seconds.
Per sampled client: 20 % never report; 10 % of reports are NaN (zeroed by
the aggregator); latency = 10 s * exp(0.5 z) + 0.05 s per local example, so
clients with more data are the usual stragglers. Rounds with fewer than 5
reports are skipped. metrics.csv says, per round, how many clients were
sampled, reported, dropped, late and zeroed, and the simulated latency.

  ./bazelw run //tff_compress:simulate -- --config=configs/faults.py
"""

import os

from tff_compress import config_lib


def get_config():
  config = config_lib.load_config_file(
      os.path.join(os.path.dirname(__file__), 'caldas_mnist.py'))
  config.name = 'faults'
  f = config.faults
  f.drop_prob = 0.2
  f.nan_prob = 0.1
  f.over_select = 0.4
  f.deadline = 30.0
  f.latency_median = 10.0
  f.latency_sigma = 0.5
  f.seconds_per_example = 0.05
  f.min_reports = 5
  return config
