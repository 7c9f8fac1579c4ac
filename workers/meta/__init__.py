"""The meta-learned inner trainers (shu, ding, zhou, jiang; Meta-Weight-Net), all on one look-ahead (`workers.meta.lookahead`).

Trainers (each module registers its names with `workers.trainer.register_trainer` on import):

- `workers.meta.adaptive`: ``adaptive-gce``, ``adaptive-sl``, ``adaptive-bitempered``, ``adaptive-polysoft``
  (shu-adaptive-robust-loss: one global Λ per loss);
- `workers.meta.narl`: ``narl-gce``, ``narl-sl``, ``narl-polysoft``, ``narl-js`` (ding-narl-adjuster:
  per-sample Λ from the logit margin; adjuster export in `workers.meta.narl_adjuster`);
- `workers.meta.l2b`: ``l2b`` (zhou-l2b-learning-to-bootstrap);
- `workers.meta.dynamic`: ``dynamic`` (jiang-dynamic-loss; no clean data needed);
- `workers.meta.mwnet`: ``mwnet`` (Meta-Weight-Net baseline).

Shared pieces: `workers.meta.method` (the hooks a method implements), `workers.meta.training` (the
run loop on the standard trainer's protocol), `workers.meta.meta_trainer` (options and specs),
`workers.meta.bounds` (bounded parameterisation of learned loss parameters).
"""
