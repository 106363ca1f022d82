"""
Training machinery (detectron2's ``engine`` for this plugin): the trainer of train_net.py and its
parts (optimizer, atomic checkpoints, the NaN/inf diagnosis, metrics.json after restarts) and the
lazy-config training loop. In this package, "engine" means a deployment engine only
(:mod:`retina_plugin.deploy`).
"""
