"""User model factories: `model.factory: package.module:function` in a study file.

Importing the module and calling the function runs the user's own code; that is the point of a
factory, and the only place a study file runs code. Nothing is ever evaluated from a string.

The calling convention is

    function(settings, *, input_shape, num_classes) -> torch.nn.Module

where `settings` is the study's model section as a plain dict (`settings["options"]` holds the
free settings of `model.options`, `settings["blocks"]` any blocks written next to the factory),
`input_shape` is one image as (channels, height, width) and `num_classes` the number of outputs
the model must give. The shapes, params and MACs of the returned module come from a dry forward
pass on a zero batch of 2, in eval mode, without gradients.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from interplay.config import ModelConfig
from interplay.errors import ArchitectureError, ConfigError, UserError
from interplay.models.summary import LayerRow, ModelSummary, format_shape

logger = logging.getLogger(__name__)

DRY_BATCH = 2


def load_factory(spec: str) -> Callable[..., Any]:
    """Import the function named by `package.module:function` (the part after ':' may be dotted).

    Args:
        spec: the value of `model.factory`.

    Returns:
        The callable.

    Raises:
        ConfigError: the spec is not written as module:function.
        ArchitectureError: the module cannot be imported or has no such callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError(
            f"model.factory {spec!r}: write it as package.module:function (e.g. mynets:small_cnn)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ArchitectureError(
                f"model.factory {spec!r}: no module named {err.name!r}; check the spelling and "
                "that the module is installed or its folder is on PYTHONPATH"
            ) from err
        raise ArchitectureError(
            f"model.factory {spec!r}: importing {module_name!r} failed: {err}; "
            "install what that module imports"
        ) from err
    except Exception as err:
        # Any error in the user's module at import time; its own text says what went wrong.
        raise ArchitectureError(
            f"model.factory {spec!r}: importing {module_name!r} failed: "
            f"{type(err).__name__}: {err}; fix that module"
        ) from err

    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "check the function name"
            raise ArchitectureError(
                f"model.factory {spec!r}: {module_name} has no attribute {attr!r}; {hint}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ArchitectureError(
            f"model.factory {spec!r}: {attr} is a {type(target).__name__}, not a function"
        )
    return target


def _call_factory(
    spec: str,
    fn: Callable[..., Any],
    settings: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
) -> nn.Module:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(settings, input_shape=input_shape, num_classes=num_classes)
        except TypeError:
            raise ArchitectureError(
                f"model.factory {spec!r}: the function takes {signature}, but it is called as "
                "function(settings, input_shape=..., num_classes=...); give it those parameters"
            ) from None

    try:
        module = fn(settings, input_shape=input_shape, num_classes=num_classes)
    except UserError:
        raise
    except Exception as err:
        raise ArchitectureError(
            f"model.factory {spec!r} raised {type(err).__name__}: {err}"
        ) from err

    if isinstance(module, type) and issubclass(module, nn.Module):
        raise ArchitectureError(
            f"model.factory {spec!r} returned the class {module.__name__}; return an instance, "
            f"e.g. {module.__name__}(...)"
        )
    if not isinstance(module, nn.Module):
        raise ArchitectureError(
            f"model.factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module; "
            "return the model"
        )
    return module


def module_label(module: nn.Module) -> str:
    """A short name for a torch layer, in the words of the block summaries where one fits."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return f"conv {kh}x{kw} {module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"linear {module.out_features}"
    return type(module).__name__


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    per_image = out.numel() // max(out.shape[0], 1)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def measure(
    module: nn.Module, input_shape: tuple[int, ...], num_classes: int, spec: str
) -> ModelSummary:
    """Run a dry forward pass and read every leaf layer's shapes, params and MACs.

    Args:
        module: the model to measure; its training mode is restored afterwards.
        input_shape: one image as (channels, height, width).
        num_classes: the output size the model must give.
        spec: the factory's name, for error messages.

    Returns:
        The summary: one row per call of a leaf layer, in call order.
    """
    rows: list[LayerRow] = []
    seen: set[int] = set()

    def record(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(layer: nn.Module, inputs: Any, output: Any) -> None:
            x, y = _first_tensor(inputs), _first_tensor(output)
            if x is None or y is None:
                return
            # A layer called twice (shared weights) owns its params once.
            params = 0 if id(layer) in seen else sum(p.numel() for p in layer.parameters())
            seen.add(id(layer))
            block = name.rsplit(".", 1)[0] if "." in name else name
            row = LayerRow(
                block,
                None,
                type(layer).__name__,
                module_label(layer),
                tuple(x.shape[1:]),
                tuple(y.shape[1:]),
                params,
                _macs(layer, y),
            )
            rows.append(row)

        return hook

    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    leaves = [
        (n or "model", m)
        for n, m in module.named_modules()
        if not list(m.children()) and not isinstance(m, containers)
    ]
    handles = [m.register_forward_hook(record(n)) for n, m in leaves]
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    batch = torch.zeros(DRY_BATCH, *input_shape, device=device, dtype=dtype)
    shown = format_shape((DRY_BATCH, *input_shape))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(batch)
    except Exception as err:
        raise ArchitectureError(
            f"model.factory {spec!r}: the dry forward pass on a zero batch {shown} failed with "
            f"{type(err).__name__}: {err}; the model must take images of "
            f"{format_shape(input_shape)}"
        ) from err
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)

    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (DRY_BATCH, num_classes):
        got = format_shape(tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out)
        raise ArchitectureError(
            f"model.factory {spec!r}: the model maps a batch {shown} to {got}, but it must give "
            f"{DRY_BATCH}x{num_classes} (one score per class); make its last layer output "
            f"num_classes={num_classes}"
        )

    # Counted after the pass, which materializes lazy layers.
    total = sum(p.numel() for p in module.parameters())
    return ModelSummary(
        input_shape=tuple(input_shape),
        rows=rows,
        total_params=total,
        total_macs=sum(r.macs for r in rows),
        output_shape=(num_classes,),
        factory=spec,
    )


def factory_model(
    model: ModelConfig, input_shape: tuple[int, ...], num_classes: int
) -> tuple[nn.Module, ModelSummary]:
    """Build a model with the user's factory and measure it.

    Args:
        model: the model section of a study file, with `factory` set.
        input_shape: one image as (channels, height, width).
        num_classes: outputs the model must give.

    Returns:
        The module (with `summary` set) and its summary.
    """
    if model.factory is None:
        raise ValueError("factory_model needs model.factory")
    spec = model.factory
    fn = load_factory(spec)
    shape = tuple(int(d) for d in input_shape)
    module = _call_factory(spec, fn, model.model_dump(), shape, num_classes)
    summary = measure(module, shape, num_classes, spec)
    if "summary" in dir(type(module)):
        logger.warning(
            "model.factory %r: the model's own 'summary' attribute is shadowed by the "
            "interplay summary on this instance",
            spec,
        )
    try:
        # Through setattr: nn.Module's annotations only admit tensors and modules.
        setattr(module, "summary", summary)  # noqa: B010
    except AttributeError:
        logger.warning("model.factory %r: cannot set model.summary (a read-only attribute)", spec)
    logger.debug(
        "model.factory %s: %d params, %d MACs", spec, summary.total_params, summary.total_macs
    )
    return module, summary
