"""
Lookup in our registries by a name taken from the config.
"""
from detectron2.utils.registry import Registry

__all__ = ["get_registered"]


def get_registered(registry: Registry, name: str, config_key: str):
    """
    ``registry.get(name)``, but an unknown name is an error that names the config key and
    lists what is registered.
    """
    if name not in registry:
        known = sorted(n for n, _ in registry)
        raise KeyError(f"{config_key} = {name!r}: expected one of the registered names {known}")
    return registry.get(name)
