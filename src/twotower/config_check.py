"""Config mistakes found before any work: missing, unknown and wrongly typed keys.

Every node with a ``_target_`` is checked against its target's signature, so
``optimizer.lr=fast`` or ``+tower.hidden_size=10`` ends in one line naming the key (and the
valid ones), not in a stack trace from inside torch after the data are read.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from twotower.console import quiet_libraries
from twotower.errors import ConfigError, user_errors

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the conf/ tree every entry point uses

_SKIP = object()  # a value that cannot be resolved here (it is checked where it is used)
_PLAIN = {int, float, bool, str, type(None), torch.Tensor}


def check_config(cfg: DictConfig, skip: tuple[str, ...] = ("hydra",)) -> None:
    """Raise :class:`ConfigError` for the first missing (``???``), unknown or mistyped key."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith(skip))
    if missing:
        raise ConfigError(missing[0], "???", "is mandatory: set it on the command line")
    for key, node in target_nodes(cfg, "", skip):
        check_node(node, key)


def check_optimizer(cfg: DictConfig) -> None:
    """Build ``optimizer`` (and ``scheduler``) over one scratch parameter, so that a value
    torch refuses (``optimizer.lr=-1``) fails before the data are read, naming its key."""
    if cfg.get("optimizer") is None:
        return
    optimizer = _build_partial(
        cfg.optimizer, "optimizer", params=[torch.nn.Parameter(torch.ones(1))]
    )
    if cfg.get("scheduler") is not None:
        _build_partial(cfg.scheduler, "scheduler", optimizer=optimizer)


def _build_partial(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node)(**kwargs)``; a refusal names the one key whose default cures it."""
    values = OmegaConf.to_container(node, resolve=True)

    def build(config: dict) -> Any:
        return hydra.utils.instantiate(config, _partial_=True)(**kwargs)

    try:
        return build(values)
    except (ValueError, TypeError) as e:
        target = values["_target_"]
        for name in (k for k in values if not str(k).startswith("_")):
            try:
                build({k: v for k, v in values.items() if k != name})
            except (ValueError, TypeError):
                continue
            raise ConfigError(f"{key}.{name}", values[name], f"refused by {target}: {e}") from None
        raise ConfigError(key, target, f"cannot be built: {e}") from None


def target_nodes(node: Any, key: str, skip: tuple[str, ...]) -> Iterator[tuple[str, DictConfig]]:
    """Every config node with a ``_target_``, with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for k in node:
            sub = f"{key}.{k}" if key else str(k)
            if not sub.startswith(skip):
                child = node._get_node(k)
                if isinstance(child, DictConfig | ListConfig):
                    yield from target_nodes(child, sub, skip)
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node._iter_ex(resolve=False)):
            yield from target_nodes(child, f"{key}[{i}]", skip)


def check_node(node: DictConfig, key: str) -> None:
    """Check the keys and value types of one ``_target_`` node against its signature."""
    target = node._target_
    try:
        obj = hydra.utils.get_object(target)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's _target_
        raise ConfigError(f"{key}._target_", target, f"cannot be imported ({e})") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return  # a builtin without a signature
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    for k in node:
        k = str(k)
        if k.startswith("_"):
            continue
        if k not in params:
            if takes_any:
                continue
            close = difflib.get_close_matches(k, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{key}.{k}",
                _value(node, k),
                f"is not an option of {target}{hint}; valid: {', '.join(names)}",
            )
        value = _value(node, k)
        hint = _annotation(params[k].annotation, module)
        if value is _SKIP or hint is None or not _checkable(hint):
            continue
        if not _matches(value, hint):
            raise ConfigError(f"{key}.{k}", value, f"must be {_describe(hint)}")


def _value(node: DictConfig, key: str) -> Any:
    try:
        return node[key]
    except OmegaConfBaseException:  # an interpolation that resolves only where it is used
        return _SKIP


def _annotation(annotation: Any, module: types.ModuleType | None) -> Any:
    """The parameter's type, evaluated if it is a string; ``None`` if unknown."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            return eval(annotation, vars(module) if module else {})  # noqa: S307 - our own code
        except Exception:  # noqa: BLE001 - names imported only for type checkers
            return None
    return annotation


def _members(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(m for a in typing.get_args(hint) for m in _members(a))
    return (hint,)


def _checkable(hint: Any) -> bool:
    """Only plain types are checked: a class the config may build is left to Hydra."""
    for m in _members(hint):
        origin = typing.get_origin(m)
        if origin is typing.Literal or m in _PLAIN:
            continue
        if origin in (list, tuple, dict) or m in (list, tuple, dict):
            continue
        return False
    return True


def _matches(value: Any, hint: Any) -> bool:
    for m in _members(hint):
        origin = typing.get_origin(m)
        if origin is typing.Literal and value in typing.get_args(m):
            return True
        if m is type(None) and value is None:
            return True
        if m in (list, tuple) or origin in (list, tuple):
            if isinstance(value, ListConfig | list | tuple):
                return True
        if (m is dict or origin is dict) and isinstance(value, DictConfig | dict):
            return True
        if isinstance(value, DictConfig) and "_target_" in value:
            return True  # built by Hydra into whatever the parameter takes
        if isinstance(value, bool):
            if m is bool:
                return True
            continue
        if m in (float, torch.Tensor) and isinstance(value, int | float):
            return True
        if m is int and isinstance(value, int):
            return True
        if m is str and isinstance(value, str):
            return True
    return False


def _describe(hint: Any) -> str:
    parts = []
    for m in _members(hint):
        if typing.get_origin(m) is typing.Literal:
            parts.append("one of " + ", ".join(map(repr, typing.get_args(m))))
        elif m is type(None):
            parts.append("null")
        elif m is torch.Tensor:
            continue
        else:
            parts.append(getattr(typing.get_origin(m) or m, "__name__", str(m)))
    text = " or ".join(dict.fromkeys(parts))
    return ("an " if text[:1] in "aeiou" else "a ") + text


def run_cli(main: Callable[[], Any], config_dir: str, config_name: str) -> None:
    """Run a ``@hydra.main`` entry point; an unknown command-line key first ends in one line
    that names the valid ones (``-m``, ``--cfg``, ``--help`` go to Hydra as they are)."""
    quiet_libraries()
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):
        with user_errors():
            check_overrides(args, config_dir, config_name)
    main()


def check_overrides(overrides: list[str], config_dir: str, config_name: str) -> None:
    """Compose the command line's overrides; an unknown key names the valid ones.

    Hydra's own message says only that the key "is not in struct".
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        try:
            compose(config_name=config_name, overrides=overrides)
        except MissingConfigException as e:
            raise_unknown_option(e, overrides)
            return  # not an option of the command line: Hydra reports it
        except ConfigCompositionException as e:
            cause = e.__cause__
            key = getattr(cause, "full_key", None)
            if not key or "not in struct" not in str(cause):
                return  # Hydra reports it
            rest = [o for o in overrides if o.split("=", 1)[0] != key]
            try:
                base = compose(config_name=config_name, overrides=rest)
            except Exception:  # noqa: BLE001 - another problem: Hydra reports it
                return
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(leaf, valid, n=1)
            hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
            value = next((o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")), "")
            raise ConfigError(
                key,
                value,
                f"no such key{hint}; valid: {', '.join(valid)} (+{key}=... adds a new one)",
            ) from None


def raise_unknown_option(e: Exception, overrides: list[str]) -> None:
    """Raise :class:`ConfigError` for ``group=option`` naming a file ``conf/group/`` lacks,
    with the nearest option; Hydra's own message takes a dozen lines."""
    group, _, option = str(getattr(e, "missing_cfg_file", "") or "").rpartition("/")
    options = sorted(getattr(e, "options", None) or [])
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~").split("@", 1)[0] == group and value == option:
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                key.lstrip("+~"), option, f"no such option{hint}; valid: {', '.join(options)}"
            ) from None
