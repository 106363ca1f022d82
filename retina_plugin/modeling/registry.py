"""
Lookup in our registries by a name taken from the config.
"""
from typing import Dict, Optional

from detectron2.utils.registry import Registry

from ..config import ConfigError

__all__ = ["unregistered_name", "get_registered"]


def unregistered_name(registry: Registry, name: str, config_key: str, aliases: Optional[Dict[str, str]] = None) -> str:
    """
    Why ``name`` (after ``aliases``, short names for registered ones) is not in ``registry``,
    naming the config key and what is registered; "" when it is.
    """
    aliases = aliases or {}
    if aliases.get(name, name) in registry:
        return ""
    known = sorted(set(aliases) | {n for n, _ in registry})
    return f"{config_key} = {name!r}: expected one of the registered names {known}"


def get_registered(registry: Registry, name: str, config_key: str, aliases: Optional[Dict[str, str]] = None):
    """``registry.get(name)``; an unknown name is a ConfigError saying :func:`unregistered_name`."""
    problem = unregistered_name(registry, name, config_key, aliases)
    if problem:
        raise ConfigError(problem)
    return registry.get((aliases or {}).get(name, name))
