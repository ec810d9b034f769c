"""Gradient-based balancing on a learnable router.

Modules
-------
penalties   balance losses (Switch, sequence-wise, global-batch), z-loss and their gradients
balance_family  any balance objective phi(F) (routesim.penalty_registry) through the
            straight-through estimator P + sg[F - P]
noisy_gate  Shazeer's noisy top-K gate with importance and load losses
task_proxy  the task-loss proxy (topic affinity, rich-get-richer quality)
optim       SGD, Adam, learning-rate and loss-weight schedules
"""
