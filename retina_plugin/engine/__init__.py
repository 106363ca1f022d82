"""
Training machinery: the trainer of train_net.py and its parts (optimizer, atomic checkpoints,
the NaN/inf diagnosis, metrics.json after restarts), the lazy-config training loop, and the
set-up every entry point of the project shares.
"""
