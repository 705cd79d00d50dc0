"""The model families of this package (DenseNet, ResNet): from a config to its model, and the
named architectures of both, for bundles, weight import and the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from iba_jax import checks
from iba_jax.models.densenet import ARCHITECTURES as DENSENETS
from iba_jax.models.densenet import DenseNet, DenseNetConfig
from iba_jax.models.resnet import RESNET_ARCHITECTURES, ResNet, ResNetConfig
from iba_jax.models.staged import StagedNetwork

Config = DenseNetConfig | ResNetConfig


class Family(NamedTuple):
    """A family: its config class, its model class and its named architectures."""

    config: type[DenseNetConfig] | type[ResNetConfig]
    model: Callable[[Any], StagedNetwork]
    architectures: dict[str, Callable[..., Any]]


FAMILIES: dict[str, Family] = {
    "densenet": Family(DenseNetConfig, DenseNet, DENSENETS),
    "resnet": Family(ResNetConfig, ResNet, RESNET_ARCHITECTURES),
}

ARCHITECTURES: dict[str, Callable[..., Config]] = {
    name: make for family in FAMILIES.values() for name, make in family.architectures.items()
}
"""Every named architecture (``densenet121``, ``resnet50``, ...) -> its config function."""


def family_of(config: Config) -> str:
    """The family name of ``config``."""
    for name, family in FAMILIES.items():
        if isinstance(config, family.config):
            return name
    raise TypeError(f"config: expected a DenseNetConfig or ResNetConfig; got {type(config)}.")


def model_for(config: Config) -> StagedNetwork:
    """The model of ``config`` (``DenseNet`` or ``ResNet``)."""
    return FAMILIES[family_of(config)].model(config)


def config_from_dict(d: dict[str, Any], family: str = "densenet") -> Config:
    """The config that ``config.to_dict()`` wrote, for ``family``."""
    checks.check_choice("family", family, tuple(FAMILIES))
    return FAMILIES[family].config.from_dict(d)
