"""Named search spaces and the code that suggests them on an Optuna trial (no Ray here)."""

from search_spaces.catalog import SpaceNotFound, load, names, read
from search_spaces.space import CategoricalParam, FloatParam, IntParam, Space
from search_spaces.yamlfile import YamlFileError, load_yaml, parse_yaml

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Space",
    "SpaceNotFound",
    "YamlFileError",
    "load",
    "load_yaml",
    "names",
    "parse_yaml",
    "read",
]
