"""1,000 of 100,000 clients a round, cohorts: the base of the DP-at-scale runs.

synthetic_iid of Li et al. (FedProx, 2020): N = 100,000 clients generated
on demand from (seed, client) with LEAF's size law (median 24 examples,
mean ~100, at most 1,000), all sharing one labelling function, so a global
model can learn it (a centrally fitted logistic regression: 0.727). LEAF's
model for it, multinomial logistic regression on the 60 features (610
parameters); one local epoch of SGD at learning rate 0.05 in batches of 10;
FedAvgM (server learning rate 1, momentum 0.9, as DP-FedAvg in McMahan et
al. 2018), K = 1,000 clients per round (q = 0.01), 50 rounds.

Cohort execution (runtime.cohort_size = 250): a round's 1,000 clients run
as 4 TFF clients, each training 250 clients in one batched computation,
grouped by size (tff_compress/cohorts/); the result equals per-client
execution. No DP here: `dp.clip = 0.1` (the median L2 norm of a client's
first-round update, measured over 200 clients: quartiles 0.06-0.24) and
`dp.delta = 1e-5` = 1/N are what the DP cells of the sweep
configs/tradeoff_dp_scale.py start from; configs/dp_scale.py ships the
sweep's better clip, 1.0.
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'scale'
  config.rounds = 50
  config.eval_every = 10
  config.clients_per_round = 1000
  config.data.name = 'synthetic_iid'
  config.data.num_clients = 100_000
  config.data.synthetic_sizes = 'leaf'
  config.model.name = 'logistic'
  config.client.learning_rate = 0.05
  config.client.batch_size = 10
  config.server.momentum = 0.9
  config.dp.clip = 0.1
  config.dp.delta = 1e-5
  config.runtime.cohort_size = 250
  return config
