"""The config model and its loader. See :mod:`engine.config.model` for the shape of a file."""

from engine.config.base import Duration, Model, Secret, format_duration, parse_duration
from engine.config.loader import ConfigError, Problem, load_config, parse_config
from engine.config.model import (
    EngineConfig,
    InstanceConfig,
    PeerConfig,
    PolicyConfig,
    ServiceConfig,
    SiteConfig,
)

__all__ = [
    "ConfigError",
    "Duration",
    "EngineConfig",
    "InstanceConfig",
    "Model",
    "PeerConfig",
    "PolicyConfig",
    "Problem",
    "Secret",
    "ServiceConfig",
    "SiteConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]
