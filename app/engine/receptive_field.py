"""Theoretical receptive fields of every module of a torch model, measured in input pixels.

For a chain of layers with kernel ``k``, stride ``s``, dilation ``d`` and padding ``p`` (Araujo, Norris & Sim
2019, "Computing Receptive Fields of Convolutional Neural Networks", Distill), with ``k' = d(k-1)+1``::

    jump      J_l = J_{l-1} * s_l                        J_0 = 1
    field     r_l = r_{l-1} + (k'_l - 1) * J_{l-1}       r_0 = 1
    padding   P_l = P_{l-1} + p_l * J_{l-1}              P_0 = 0
    centre of output unit u:  -P + u*J + (r-1)/2

Rather than reading layer hyper-parameters off a list of "chosen" layers, the model itself is run once on a
blank image under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`. Every ATen operator the forward
pass executes (convolutions, pools, pads, slices, reshapes, adds, concatenations, matrix products...) updates
an exact per-tensor geometry: for output unit 0 of each spatial axis, the first and last input pixel it can
see plus the jump. That is the Distill recurrence written on intervals, which makes multi-path graphs exact:
where paths merge (residual adds, concatenations) the field of a unit is the *union* of the fields of its
inputs, so ``rf`` is the maximum over paths and the effective padding ``P`` is that of the leftmost path
(``-P`` is the first pixel the union reaches). Forward hooks on every module snapshot the geometry of the
value each module returns, so containers (``layer2.3``, ``blocks.2``, ``features``) get the field of their
output. Because the graph is recorded while it executes, Python control flow, in-place ops
(``out += identity``) and timm's dynamic TF-"same" padding (``Conv2dSame``: ``F.pad`` by the amount TF would
use for this input size, then an unpadded convolution) need no special cases.

Conventions, documented once here:

* Normalisation layers (batch/layer/group norm) are treated as per-pixel, as is usual for receptive fields,
  even though group/layer norm statistics pool over space.
* A global reduction (adaptive pooling to 1, ``mean`` over H and W, flatten then ``Linear``, softmax or a
  matrix product over a dimension that holds image positions) is a kernel as large as the map at that point:
  the field then spans everything the map saw and is marked ``is_global``. Anything multiplied by such a
  tensor (squeeze-and-excitation gates, attention) is global too, unless ``ignore_global_context=True``.
* Operators the geometry does not know (rare in CNNs) are treated as per-pixel when they keep the shape of an
  input and as global otherwise; either way the result is flagged ``exact=False``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["AxisField", "ReceptiveField", "receptive_fields", "rf_in_degrees"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Public surface
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisField:
    """Receptive field along one spatial axis (height, width, ... in that order)."""

    rf_px: int  # side of the field in input pixels (may exceed the image)
    stride_px: int  # jump: input pixels between neighbouring output units
    padding_px: float  # effective padding P: output unit 0 starts at pixel -P
    is_global: bool  # a global reduction mixed every position along this axis

    @property
    def start_px(self) -> float:
        """First input pixel seen by output unit 0 (negative values lie in the padding)."""
        return -self.padding_px

    @property
    def centre_of_first_unit_px(self) -> float:
        """Centre of the field of output unit 0, in input pixel coordinates."""
        return -self.padding_px + (self.rf_px - 1) / 2


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive field of one module's output, in input pixels.

    The scalar fields describe the spatial axis with the largest field (for the square kernels of most CNNs
    every axis agrees); ``axes`` has one :class:`AxisField` per spatial axis.
    """

    rf_px: int  # theoretical RF side in input pixels (may exceed the image)
    stride_px: int  # jump: input pixels between neighbouring output units
    padding_px: float  # effective padding P (of the union of all paths, i.e. of the leftmost one)
    covers_input: bool  # the field (or a global reduction) spans the whole input image along every axis
    is_global: bool = False  # a global reduction upstream: every output value depends on every input pixel
    exact: bool = True  # False when an operator the geometry does not know was approximated upstream
    axes: tuple[AxisField, ...] = ()

    @property
    def centre_of_first_unit_px(self) -> float:
        """Centre of output unit 0's field: ``-P + (r - 1) / 2``."""
        return -self.padding_px + (self.rf_px - 1) / 2

    def centre_px(self, unit: int) -> float:
        """Centre of output unit ``unit``'s field along the reported axis: ``-P + u*J + (r - 1) / 2``."""
        return self.centre_of_first_unit_px + unit * self.stride_px


def rf_in_degrees(rf_px: int, input_px: int, fov_deg: float) -> float:
    """Convert a receptive field in pixels to degrees of visual angle.

    The image of ``input_px`` pixels is assumed to span ``fov_deg`` degrees. A theoretical field larger than
    the image is clipped at the image, because nothing outside it is ever shown:
    ``deg = min(rf_px, input_px) * fov_deg / input_px``.
    """
    if input_px <= 0:
        raise ValueError(f"input_px must be positive, got {input_px}")
    if rf_px < 0:
        raise ValueError(f"rf_px must be non-negative, got {rf_px}")
    return min(rf_px, input_px) * fov_deg / input_px


def receptive_fields(
    model: torch.nn.Module,
    input_size: int | Sequence[int] = 224,
    *,
    in_chans: int | None = None,
    spatial_dims: int = 2,
    ignore_global_context: bool = False,
) -> dict[str, ReceptiveField]:
    """Receptive field of the output of every module of ``model``, keyed by qualified name, in model order.

    The model runs once, without gradients and in eval mode (training flags are restored afterwards), on a
    blank ``(1, in_chans, *input_size)`` image on the model's device; its weights never influence the result,
    which is a pure function of the architecture and ``input_size`` and so safe to cache on those.

    Args:
        model: any ``torch.nn.Module`` taking one image tensor.
        input_size: image side in pixels (square), or one size per spatial axis.
        in_chans: input channels; by default those of the first convolution (else 3).
        spatial_dims: number of spatial axes of the input (1 for ``Conv1d`` models, 2 for images).
        ignore_global_context: when True, an element-wise product or sum with a globally pooled tensor
            (squeeze-and-excitation, global context gates) leaves the local field alone instead of making
            it global, which is usually what one wants to display for such networks.

    Returns:
        ``{qualified_name: ReceptiveField}`` for every module (the root excluded) that the forward pass calls
        and whose output derives from the image. A module called several times (a shared ``ReLU``) reports
        its last call, matching what a forward hook would capture.
    """
    sizes = _normalise_size(input_size, spatial_dims)
    first_param = next(iter(model.parameters()), None)
    device = first_param.device if first_param is not None else torch.device("cpu")
    dtype = first_param.dtype if first_param is not None and first_param.is_floating_point() else torch.float32
    channels = in_chans if in_chans is not None else _guess_in_chans(model)

    names_by_module: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name:
            names_by_module.setdefault(id(module), []).append(name)
    constants = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}

    snapshots: dict[str, _State] = {}
    tracker = _Tracker(spatial_dims, ignore_global_context, constants)
    owner = threading.get_ident()

    def hook(module: torch.nn.Module, _args: Any, output: Any) -> None:
        # Another thread may be running the same model concurrently; its calls are none of our business.
        if owner != threading.get_ident() or not tracker.active:
            return
        state = tracker.state_of_output(output)
        if state is not None:
            for name in names_by_module.get(id(module), ()):
                snapshots[name] = state

    was_training = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(hook) for module in model.modules() if id(module) in names_by_module]
    try:
        model.eval()
        image = torch.zeros((1, channels, *sizes), device=device, dtype=dtype)
        tracker.seed(image, sizes)
        with torch.no_grad(), tracker:
            model(image)
    finally:
        tracker.active = False
        for handle in handles:
            handle.remove()
        for module, flag in was_training.items():
            module.training = flag

    result: dict[str, ReceptiveField] = {}
    for name, _module in model.named_modules():
        if name and name in snapshots:
            result[name] = _report(snapshots[name], sizes)
    return result


# --------------------------------------------------------------------------------------------------------------
# Geometry of one tensor
# --------------------------------------------------------------------------------------------------------------

# A tensor dimension is described by the row-major list of "atoms" it is made of: (image axis or None, size).
# A plain feature map (N, C, H, W) is ((None, N),), ((None, C),), ((0, H),), ((1, W),); flattening it gives one
# dimension ((None, C), (0, H), (1, W)), which is how a later matrix product knows it mixes image positions.
_Atom = tuple[int | None, int]
_Dim = tuple[_Atom, ...]
_Layout = tuple[_Dim, ...]


@dataclass(frozen=True)
class _Axis:
    """Input pixels seen by output unit 0 along one image axis: [start, end], and the jump between units."""

    jump: Fraction
    start: Fraction
    end: Fraction
    full: bool = False  # globally mixed: every unit sees [start, end], whatever its position


@dataclass(frozen=True)
class _State:
    axes: tuple[_Axis, ...]
    layout: _Layout
    exact: bool = True


def _window(axis: _Axis, kernel: int | Fraction, stride: int | Fraction, pad_before: int | Fraction) -> _Axis:
    """Apply a sliding window (effective kernel size ``kernel``) along an axis: the Distill recurrence."""
    if axis.full:  # every unit already sees the whole support; windows cannot add image pixels to it
        return axis
    return _Axis(
        jump=axis.jump * stride,
        start=axis.start - pad_before * axis.jump,
        end=axis.end + (kernel - 1 - pad_before) * axis.jump,
    )


def _collapse(axis: _Axis, size: int) -> _Axis:
    """A reduction over all ``size`` units of an axis: a window as large as the map, marked global."""
    if axis.full:
        return axis
    return _Axis(jump=axis.jump * size, start=axis.start, end=axis.end + (size - 1) * axis.jump, full=True)


def _shift(axis: _Axis, units: int) -> _Axis:
    """Re-index an axis so that its unit ``units`` becomes unit 0 (slicing, selecting, splitting)."""
    return _window(axis, 1, 1, -units)


def _plain_dim(size: int) -> _Dim:
    return ((None, size),)


def _plain_layout(shape: Sequence[int]) -> _Layout:
    return tuple(_plain_dim(int(s)) for s in shape)


def _axes_in(dim: _Dim) -> list[tuple[int, int]]:
    return [(axis, size) for axis, size in dim if axis is not None]


def _single_axis(dim: _Dim) -> int | None:
    """The image axis a dimension holds, if it holds exactly one and nothing else of size > 1."""
    spatial = _axes_in(dim)
    if len(spatial) != 1:
        return None
    if any(axis is None and size != 1 for axis, size in dim):
        return None
    return spatial[0][0]


def _dim_size(dim: _Dim) -> int:
    return math.prod(size for _, size in dim)


def _with_size(dim: _Dim, size: int) -> _Dim:
    """The same dimension with a new extent, e.g. a feature map axis after a strided convolution."""
    if _dim_size(dim) == size:
        return dim
    spatial = _axes_in(dim)
    if len(spatial) == 1 and all(axis is not None or n == 1 for axis, n in dim):
        return ((spatial[0][0], size),)  # one image axis (plus size-1 fillers): it takes the new extent
    if all(n == 1 for _, n in spatial):
        # Only channel-like positions change extent (chunking channels after a shuffle); size-1 image axes
        # ride along unchanged.
        return _plain_dim(size) + tuple(spatial)
    big = [i for i, (_, n) in enumerate(dim) if n != 1]
    if len(big) == 1:
        i = big[0]
        return dim[:i] + ((dim[i][0], size),) + dim[i + 1 :]
    raise _Unfit


class _Unfit(Exception):
    """A layout could not be matched to an actual tensor shape."""


def _fit(state: _State, shape: Sequence[int]) -> _State:
    """Reconcile a rule's layout with the shape the operator actually produced."""
    shape = [int(s) for s in shape]
    if len(state.layout) != len(shape):
        logger.debug("layout rank %d does not match shape %s; treating as global", len(state.layout), shape)
        return _globalise(state, shape)
    dims: list[_Dim] = []
    axes = list(state.axes)
    exact = state.exact
    for dim, size in zip(state.layout, shape, strict=True):
        try:
            dims.append(_with_size(dim, size))
        except _Unfit:
            for axis, n in _axes_in(dim):
                axes[axis] = _collapse(axes[axis], n)
            dims.append(_plain_dim(size))
            exact = False
    return _State(tuple(axes), tuple(dims), exact)


def _globalise(state: _State, shape: Sequence[int]) -> _State:
    """Fallback for an operator whose effect on positions is unknown: every axis mixes everything it holds."""
    sizes = _axis_sizes(state.layout)
    axes = tuple(_collapse(axis, sizes.get(i, 1)) for i, axis in enumerate(state.axes))
    return _State(axes, _plain_layout(shape), exact=False)


def _axis_sizes(layout: _Layout) -> dict[int, int]:
    return {axis: size for dim in layout for axis, size in _axes_in(dim)}


def _merge(states: Sequence[_State], layout: _Layout, ignore_context: bool) -> _State:
    """Union of the fields of several inputs that meet in one output value (add, mul, cat, ...)."""
    if ignore_context:
        local = [s for s in states if not all(a.full for a in s.axes)]
        if local:
            states = local
    axes: list[_Axis] = []
    exact = all(s.exact for s in states)
    for i in range(len(states[0].axes)):
        group = [s.axes[i] for s in states]
        local_axes = [a for a in group if not a.full]
        jumps = {a.jump for a in (local_axes or group)}
        if len(jumps) > 1:
            # Units of different sizes meeting element-wise (broadcast or resampled maps): no single jump.
            exact = False
        axes.append(
            _Axis(
                jump=max(jumps),
                start=min(a.start for a in group),
                end=max(a.end for a in group),
                full=any(a.full for a in group),
            )
        )
    return _State(tuple(axes), layout, exact)


def _broadcast_layout(operands: Sequence[tuple[_Layout, Sequence[int]]], out_shape: Sequence[int]) -> _Layout:
    """Layout of a broadcasting element-wise result: each dimension comes from an operand of full extent."""
    ndim = len(out_shape)
    dims: list[_Dim] = []
    for j, size in enumerate(out_shape):
        best: _Dim | None = None
        for layout, shape in operands:
            k = j - (ndim - len(shape))
            if k < 0 or int(shape[k]) != int(size):
                continue
            if best is None or (_axes_in(layout[k]) and not _axes_in(best)):
                best = layout[k]
        dims.append(best if best is not None else _plain_dim(int(size)))
    return tuple(dims)


def _reshape(state: _State, in_shape: Sequence[int], out_shape: Sequence[int]) -> _State:
    """Follow image axes through view/reshape/flatten/unflatten by regrouping the row-major atom sequence."""
    in_shape, out_shape = [int(s) for s in in_shape], [int(s) for s in out_shape]
    if in_shape == out_shape:
        return state
    atoms = [atom for dim in state.layout for atom in dim]
    axes = list(state.axes)
    dims: list[_Dim] = []
    i = 0
    for target in out_shape:
        dim: list[_Atom] = []
        prod = 1
        while i < len(atoms):
            axis, n = atoms[i]
            if n == 1:
                # Size-1 atoms do not constrain the shape; they ride with a dimension that still needs atoms.
                if prod < target or target == 1:
                    dim.append(atoms[i])
                    i += 1
                    continue
                break
            if prod == target:
                break
            if target % (prod * n) == 0:
                dim.append(atoms[i])
                prod *= n
                i += 1
                continue
            need = target // prod if target % prod == 0 else 0
            if need > 1 and n % need == 0:
                # The atom is split row-major into (need, inner): this dimension gets the outer part. For an
                # image axis each outer unit now stands for a block of `inner` units, a window of that size
                # (space-to-depth, window partitions, patch merging all read the block as one location).
                inner = n // need
                if axis is not None:
                    axes[axis] = _window(axes[axis], inner, inner, 0)
                dim.append((axis, need))
                atoms[i] = (None, inner)
                prod = target
                continue
            return _globalise(state, out_shape)
        if prod != target:
            return _globalise(state, out_shape)
        dims.append(tuple(dim))
    leftover = atoms[i:]
    if any(n != 1 for _, n in leftover):
        return _globalise(state, out_shape)
    if leftover and dims:
        dims[-1] = dims[-1] + tuple(leftover)
    return _State(tuple(axes), tuple(dims), state.exact)


# --------------------------------------------------------------------------------------------------------------
# Operator rules
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Op:
    """One executed ATen operator, as the rules see it."""

    name: str  # overload packet name, e.g. "convolution", "add_"
    bound: dict[str, Any]  # schema argument name -> value, defaults filled in
    outputs: list[torch.Tensor]
    tracker: _Tracker

    def state(self, value: Any) -> _State | None:
        return self.tracker.state_of(value) if isinstance(value, torch.Tensor) else None

    def arg(self, *names: str) -> Any:
        for name in names:
            if name in self.bound:
                return self.bound[name]
        raise KeyError(names)

    def layout_of(self, tensor: torch.Tensor) -> _Layout:
        state = self.state(tensor)
        return state.layout if state is not None else _plain_layout(tensor.shape)


_Rule = Callable[[_Op], list[_State | None]]
_RULES: dict[str, _Rule] = {}


def _rule(*names: str) -> Callable[[_Rule], _Rule]:
    def register(fn: _Rule) -> _Rule:
        for name in names:
            _RULES[name] = fn
        return fn

    return register


def _expand(value: Any, n: int, default: int) -> list[int]:
    """Expand an int-or-list hyper-parameter to ``n`` ints (an empty list means ``default``)."""
    if value is None:
        return [default] * n
    if isinstance(value, int):
        return [value] * n
    values = [int(v) for v in value]
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    return values


def _spatial_rank(name: str) -> int:
    for rank in (1, 2, 3):
        if f"{rank}d" in name:
            return rank
    raise ValueError(f"cannot tell the spatial rank of {name}")


def _windowed(
    op: _Op,
    source: torch.Tensor,
    kernels: Sequence[int | Fraction],
    strides: Sequence[int | Fraction],
    pads: Sequence[int | Fraction],
    layout_dims: Callable[[_Layout], _Layout] | None = None,
    state: _State | None = None,
) -> list[_State | None]:
    """Shared body of convolutions and pools over the last ``len(kernels)`` dimensions of ``source``."""
    state = state if state is not None else op.state(source)
    if state is None:
        return [None] * len(op.outputs)
    axes = list(state.axes)
    exact = state.exact
    nsp = len(kernels)
    for i in range(nsp):
        dim = state.layout[source.dim() - nsp + i]
        axis = _single_axis(dim)
        if axis is not None:
            axes[axis] = _window(axes[axis], kernels[i], strides[i], pads[i])
        elif kernels[i] != 1 or strides[i] != 1:
            # A window sliding over a dimension that holds several image axes (or pieces of one): it mixes
            # them in a way one interval cannot describe, so take the conservative global answer.
            for a, n in _axes_in(dim):
                axes[a] = _collapse(axes[a], n)
                exact = False
    layout = layout_dims(state.layout) if layout_dims else state.layout
    new = _fit(_State(tuple(axes), layout, exact), op.outputs[0].shape)
    return [new, *(replace(new, layout=_plain_layout(t.shape)) for t in op.outputs[1:])]


@_rule("convolution", "_convolution", "conv2d", "conv1d", "conv3d", "mkldnn_convolution", "cudnn_convolution")
def _conv(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("input")
    weight: torch.Tensor = op.arg("weight")
    nsp = weight.dim() - 2
    kernel = [int(k) for k in weight.shape[2:]]
    stride = _expand(op.bound.get("stride"), nsp, 1)
    dilation = _expand(op.bound.get("dilation"), nsp, 1)
    padding_arg = op.bound.get("padding", 0)
    if isinstance(padding_arg, str):
        # aten.conv2d.padding overload: "valid" pads nothing, "same" pads d(k-1) split with the extra on the
        # right, as torch.nn.functional does.
        padding = [0 if padding_arg == "valid" else (d * (k - 1)) // 2 for k, d in zip(kernel, dilation, strict=True)]
    else:
        padding = _expand(padding_arg, nsp, 0)
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    if op.bound.get("transposed", False):
        return _transposed_conv(op, state, effective, stride, padding)

    channel_dim = x.dim() - nsp - 1

    def relayout(layout: _Layout) -> _Layout:
        return layout[:channel_dim] + (_plain_dim(int(op.outputs[0].shape[channel_dim])),) + layout[channel_dim + 1 :]

    # Image axes folded into the channels (a reshape that merged positions into channels) are summed over.
    folded = _axes_in(state.layout[channel_dim])
    if folded:
        axes = list(state.axes)
        for a, n in folded:
            axes[a] = _collapse(axes[a], n)
        state = replace(state, axes=tuple(axes))
    return _windowed(op, x, effective, stride, padding, relayout, state)


def _transposed_conv(
    op: _Op, state: _State, effective: list[int], stride: list[int], padding: list[int]
) -> list[_State | None]:
    """Transposed convolution: output unit v reads input units (v + p - j) / s; approximate beyond stride 1."""
    x: torch.Tensor = op.arg("input")
    nsp = len(effective)
    axes = list(state.axes)
    exact = state.exact and all(s == 1 for s in stride)
    for i in range(nsp):
        axis = _single_axis(state.layout[x.dim() - nsp + i])
        if axis is None or axes[axis].full:
            continue
        # With stride 1 this is exactly a convolution padded by k'-1-p; with stride s the jump divides by s.
        s = Fraction(stride[i])
        a = axes[axis]
        axes[axis] = _Axis(
            jump=a.jump / s,
            start=a.start + (padding[i] - (effective[i] - 1)) / s * a.jump,
            end=a.end + Fraction(padding[i]) / s * a.jump,
        )
    channel_dim = x.dim() - nsp - 1
    layout = (
        state.layout[:channel_dim]
        + (_plain_dim(int(op.outputs[0].shape[channel_dim])),)
        + state.layout[channel_dim + 1 :]
    )
    return [_fit(_State(tuple(axes), layout, exact), op.outputs[0].shape)]


@_rule(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "mkldnn_max_pool2d",
    "quantized_max_pool2d",
)
def _max_pool(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    nsp = _spatial_rank(op.name)
    kernel = _expand(op.arg("kernel_size"), nsp, 1)
    stride = _expand(op.bound.get("stride"), nsp, 0)
    stride = [s if s else k for s, k in zip(stride, kernel, strict=True)]  # an empty stride means "= kernel"
    padding = _expand(op.bound.get("padding"), nsp, 0)
    dilation = _expand(op.bound.get("dilation"), nsp, 1)
    # ceil_mode only adds a partial window at the far edge; it changes the output size, not the field.
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    return _windowed(op, x, effective, stride, padding)


@_rule("avg_pool1d", "avg_pool2d", "avg_pool3d", "mkldnn_avg_pool2d")
def _avg_pool(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    nsp = _spatial_rank(op.name)
    kernel = _expand(op.arg("kernel_size"), nsp, 1)
    stride = _expand(op.bound.get("stride"), nsp, 0)
    stride = [s if s else k for s, k in zip(stride, kernel, strict=True)]
    padding = _expand(op.bound.get("padding"), nsp, 0)
    return _windowed(op, x, kernel, stride, padding)


@_rule(
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "mkldnn_adaptive_avg_pool2d",
)
def _adaptive_pool(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    out = op.outputs[0]
    nsp = _spatial_rank(op.name)
    axes = list(state.axes)
    exact = state.exact
    for i in range(nsp):
        d = x.dim() - nsp + i
        n, m = int(x.shape[d]), int(out.shape[d])
        axis = _single_axis(state.layout[d])
        if axis is None:
            if m != n:
                for a, size in _axes_in(state.layout[d]):
                    axes[a] = _collapse(axes[a], size)
                    exact = False
            continue
        if m == 1:
            axes[axis] = _collapse(axes[axis], n)  # global pooling: the kernel is the whole map
        elif n % m == 0:
            axes[axis] = _window(axes[axis], n // m, n // m, 0)
        else:
            # Bins [floor(i n/m), ceil((i+1) n/m)) of unequal width: report the widest, jump n/m, inexact.
            widest = max(-((-(j + 1) * n) // m) - (j * n) // m for j in range(m))
            axes[axis] = _window(axes[axis], widest, Fraction(n, m), 0)
            exact = False
    new = _fit(_State(tuple(axes), state.layout, exact), out.shape)
    return [new, *(new for _ in op.outputs[1:])]


@_rule(
    "constant_pad_nd",
    "reflection_pad1d",
    "reflection_pad2d",
    "reflection_pad3d",
    "replication_pad1d",
    "replication_pad2d",
    "replication_pad3d",
    "_pad_circular",
    "pad",
)
def _pad(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    pads = [int(p) for p in op.arg("pad", "padding")]
    axes = list(state.axes)
    # The pad list runs from the last dimension backwards: (left_-1, right_-1, left_-2, right_-2, ...).
    for j in range(len(pads) // 2):
        axis = _single_axis(state.layout[x.dim() - 1 - j])
        if axis is not None:
            axes[axis] = _window(axes[axis], 1, 1, pads[2 * j])  # a 1-wide window padded on the left
    return [_fit(_State(tuple(axes), state.layout, state.exact), op.outputs[0].shape)]


def _reduce_dims(op: _Op, x: torch.Tensor, dims: Iterable[int], keep: bool) -> _State | None:
    """Reduce (or mix along) ``dims``: image axes held there collapse to global fields."""
    state = op.state(x)
    if state is None:
        return None
    ndim = max(x.dim(), 1)
    reduced = sorted({d % ndim for d in dims})
    axes = list(state.axes)
    for d in reduced:
        if d < len(state.layout):
            for a, n in _axes_in(state.layout[d]):
                axes[a] = _collapse(axes[a], n)
    layout = state.layout if keep else tuple(dim for d, dim in enumerate(state.layout) if d not in reduced)
    return _State(tuple(axes), layout, state.exact)


def _dims_arg(op: _Op, x: torch.Tensor) -> list[int]:
    dims = op.bound.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(x.dim()))  # no dim (or dim=[]) reduces everything
    if isinstance(dims, int):
        return [dims]
    return [int(d) for d in dims]


@_rule(
    "mean",
    "sum",
    "nansum",
    "amax",
    "amin",
    "max",
    "min",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "logsumexp",
    "norm",
    "linalg_vector_norm",
    "prod",
    "any",
    "all",
    "argmax",
    "argmin",
    "median",
    "nanmedian",
    "mode",
    "count_nonzero",
    "aminmax",
)
def _reduction(op: _Op) -> list[_State | None]:
    x = op.bound.get("self", op.bound.get("input"))
    if not isinstance(x, torch.Tensor):
        return _fallback(op)
    if op.name in ("max", "min") and "other" in op.bound:
        return _pointwise(op)  # the binary element-wise overload (max.other), not a reduction
    keep = bool(op.bound.get("keepdim", False))
    state = _reduce_dims(op, x, _dims_arg(op, x), keep)
    if state is None:
        return [None] * len(op.outputs)
    return [_fit(state, t.shape) for t in op.outputs]


@_rule(
    "_softmax",
    "_log_softmax",
    "softmax",
    "log_softmax",
    "cumsum",
    "cumprod",
    "logcumsumexp",
    "cummax",
    "cummin",
    "sort",
    "_safe_softmax",
    "topk",
    "kthvalue",
)
def _mix_along(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    dim = int(op.bound.get("dim", -1))
    state = _reduce_dims(op, x, [dim], keep=True)
    if state is None:
        return [None] * len(op.outputs)
    return [_fit(state, t.shape) for t in op.outputs]


def _contract(
    op: _Op, operands: Sequence[tuple[torch.Tensor, Sequence[int]]], out_dims: list[_Dim | None]
) -> list[_State | None]:
    """Matrix products: image axes in a contracted dimension collapse, the rest pass through."""
    states: list[_State] = []
    for tensor, contracted in operands:
        state = op.state(tensor)
        if state is not None:
            reduced = _reduce_dims(op, tensor, contracted, keep=True)
            assert reduced is not None
            states.append(reduced)
    if not states:
        return [None] * len(op.outputs)
    out = op.outputs[0]
    layout = tuple(d if d is not None else _plain_dim(int(s)) for d, s in zip(out_dims, out.shape, strict=True))
    return [_fit(_merge(states, layout, op.tracker.ignore_context), out.shape)]


@_rule("mm", "addmm", "_addmm_activation")
def _mm(op: _Op) -> list[_State | None]:
    a: torch.Tensor = op.bound["mat1"] if "mat1" in op.bound else op.bound["self"]
    b: torch.Tensor = op.bound["mat2"]
    lay_a, lay_b = op.layout_of(a), op.layout_of(b)
    result = _contract(op, [(a, [1]), (b, [0])], [lay_a[0], lay_b[1]])
    bias = op.bound.get("self") if "mat1" in op.bound else None
    return _with_bias(op, result, bias)


@_rule("bmm", "baddbmm")
def _bmm(op: _Op) -> list[_State | None]:
    a: torch.Tensor = op.bound["batch1"] if "batch1" in op.bound else op.bound["self"]
    b: torch.Tensor = op.bound["batch2"] if "batch2" in op.bound else op.bound["mat2"]
    lay_a, lay_b = op.layout_of(a), op.layout_of(b)
    batch = lay_a[0] if _axes_in(lay_a[0]) or not _axes_in(lay_b[0]) else lay_b[0]
    result = _contract(op, [(a, [2]), (b, [1])], [batch, lay_a[1], lay_b[2]])
    bias = op.bound.get("self") if "batch1" in op.bound else None
    return _with_bias(op, result, bias)


@_rule("mv", "addmv")
def _mv(op: _Op) -> list[_State | None]:
    a: torch.Tensor = op.bound["mat"] if "mat" in op.bound else op.bound["self"]
    v: torch.Tensor = op.bound["vec"]
    result = _contract(op, [(a, [1]), (v, [0])], [op.layout_of(a)[0]])
    bias = op.bound.get("self") if "mat" in op.bound else None
    return _with_bias(op, result, bias)


@_rule("dot", "vdot")
def _dot(op: _Op) -> list[_State | None]:
    a: torch.Tensor = op.bound["self"]
    b: torch.Tensor = op.bound["tensor"]
    return _contract(op, [(a, [0]), (b, [0])], [])


def _with_bias(op: _Op, result: list[_State | None], bias: Any) -> list[_State | None]:
    """Fold a broadcast additive term (addmm's ``self``) into a matrix product's result."""
    bias_state = op.state(bias)
    if bias_state is None:
        return result
    out = op.outputs[0]
    lay = result[0].layout if result[0] is not None else _plain_layout(out.shape)
    layout = _broadcast_layout([(lay, out.shape), (bias_state.layout, bias.shape)], out.shape)
    states = [s for s in (result[0], bias_state) if s is not None]
    return [_fit(_merge(states, layout, op.tracker.ignore_context), out.shape)]


@_rule(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
)
def _attention(op: _Op) -> list[_State | None]:
    q: torch.Tensor = op.arg("query")
    k: torch.Tensor = op.arg("key")
    v: torch.Tensor = op.arg("value")
    # softmax(q k^T) v: every query mixes all key/value positions (dimension -2).
    states = [s for s in (op.state(q), _reduce_dims(op, k, [-2], True), _reduce_dims(op, v, [-2], True)) if s]
    if not states:
        return [None] * len(op.outputs)
    out = op.outputs[0]
    lay_q = op.layout_of(q)
    layout = lay_q[:-1] + (_plain_dim(int(out.shape[-1])),)
    merged = _fit(_merge(states, layout, op.tracker.ignore_context), out.shape)
    return [merged, *(replace(merged, layout=_plain_layout(t.shape)) for t in op.outputs[1:])]


@_rule(
    "view",
    "_unsafe_view",
    "reshape",
    "_reshape_alias",
    "view_copy",
    "_reshape_copy",
    "flatten",
    "unflatten",
    "_unsafe_view_copy",
)
def _view(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    return [_fit(_reshape(state, x.shape, op.outputs[0].shape), op.outputs[0].shape)]


@_rule("permute", "permute_copy")
def _permute(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    ndim = max(x.dim(), 1)
    order = [int(d) % ndim for d in op.arg("dims")]
    return [_fit(replace(state, layout=tuple(state.layout[d] for d in order)), op.outputs[0].shape)]


@_rule("transpose", "transpose_copy", "t", "t_copy", "numpy_T", "swapaxes", "swapdims")
def _transpose(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    layout = list(state.layout)
    if x.dim() >= 2:
        if op.name.startswith("t") and "dim0" not in op.bound:
            d0, d1 = 0, 1
            if op.name == "numpy_T":
                layout.reverse()
                return [_fit(replace(state, layout=tuple(layout)), op.outputs[0].shape)]
        else:
            d0, d1 = int(op.arg("dim0", "axis0")) % x.dim(), int(op.arg("dim1", "axis1")) % x.dim()
        layout[d0], layout[d1] = layout[d1], layout[d0]
    return [_fit(replace(state, layout=tuple(layout)), op.outputs[0].shape)]


@_rule("unsqueeze", "unsqueeze_copy")
def _unsqueeze(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    d = int(op.arg("dim")) % (x.dim() + 1)
    layout = state.layout[:d] + (_plain_dim(1),) + state.layout[d:]
    return [_fit(replace(state, layout=layout), op.outputs[0].shape)]


@_rule("squeeze", "squeeze_copy")
def _squeeze(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    ndim = max(x.dim(), 1)
    dims = op.bound.get("dim")
    if dims is None:
        drop = {d for d in range(x.dim()) if x.shape[d] == 1}
    else:
        drop = {int(d) % ndim for d in ([dims] if isinstance(dims, int) else dims) if x.shape[int(d) % ndim] == 1}
    kept = [d for d in range(x.dim()) if d not in drop]
    layout = [state.layout[d] for d in kept]
    riders = tuple(atom for d in sorted(drop) for atom in state.layout[d] if atom[0] is not None)
    if riders and layout:
        layout[-1] = layout[-1] + riders  # size-1 image axes must live somewhere; they change no sizes
    return [_fit(replace(state, layout=tuple(layout)), op.outputs[0].shape)]


@_rule("expand", "expand_copy", "broadcast_to", "expand_as")
def _expand_rule(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    out = op.outputs[0]
    lead = out.dim() - x.dim()
    layout: list[_Dim] = [_plain_dim(int(s)) for s in out.shape[:lead]]
    for d, dim in enumerate(state.layout):
        size = int(out.shape[lead + d])
        # A broadcast size-1 dimension repeats one value: plain positions, keeping any size-1 image axis.
        layout.append(dim if _dim_size(dim) == size else _plain_dim(size) + tuple(a for a in dim if a[0] is not None))
    return [_fit(replace(state, layout=tuple(layout)), out.shape)]


def _pick(state: _State, d: int, indices: Sequence[int], keep: bool, out_shape: Sequence[int]) -> _State:
    """Select (keep=False) or slice (keep=True, indices = start, step) positions of dimension ``d``."""
    dim = state.layout[d]
    axes = list(state.axes)
    exact = state.exact
    axis = _single_axis(dim)
    if keep:
        start, step = indices
        if axis is not None:
            axes[axis] = _window(axes[axis], 1, step, -start)
        elif _axes_in(dim) and not (start == 0 and step == 1 and int(out_shape[d]) == _dim_size(dim)):
            for a, n in _axes_in(dim):
                axes[a] = _collapse(axes[a], n)
            exact = False
        layout = state.layout
    else:
        (index,) = indices
        # Unravel the flat index over the (row-major) atoms to find each image axis' coordinate.
        for atom_axis, size in reversed(dim):
            coord = index % size
            index //= size
            if atom_axis is not None:
                axes[atom_axis] = _shift(axes[atom_axis], coord)
        layout = state.layout[:d] + state.layout[d + 1 :]
    return _fit(_State(tuple(axes), layout, exact), out_shape)


@_rule("select", "select_copy")
def _select(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    d = int(op.arg("dim")) % x.dim()
    index = int(op.arg("index")) % int(x.shape[d])
    return [_pick(state, d, [index], False, op.outputs[0].shape)]


@_rule("slice", "slice_copy", "narrow", "narrow_copy")
def _slice(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    d = int(op.bound.get("dim", 0)) % x.dim()
    size = int(x.shape[d])
    if op.name.startswith("narrow"):
        start, step = int(op.arg("start")), 1
    else:
        raw = op.bound.get("start")
        start = 0 if raw is None else int(raw)
        step = int(op.bound.get("step", 1) or 1)
    start = min(max(start + size if start < 0 else start, 0), size)
    return [_pick(state, d, [start, step], True, op.outputs[0].shape)]


@_rule(
    "split",
    "split_with_sizes",
    "unsafe_split",
    "unsafe_split_with_sizes",
    "split_copy",
    "split_with_sizes_copy",
    "tensor_split",
    "chunk",
    "unsafe_chunk",
)
def _split(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    d = int(op.bound.get("dim", 0)) % x.dim()
    result: list[_State | None] = []
    offset = 0
    for t in op.outputs:
        result.append(_pick(state, d, [offset, 1], True, t.shape))
        offset += int(t.shape[d])
    return result


@_rule("unbind", "unbind_copy")
def _unbind(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    d = int(op.bound.get("dim", 0)) % x.dim()
    return [_pick(state, d, [i], False, t.shape) for i, t in enumerate(op.outputs)]


@_rule("cat", "concat", "concatenate", "_cat", "stack")
def _cat(op: _Op) -> list[_State | None]:
    tensors = [t for t in op.arg("tensors") if isinstance(t, torch.Tensor)]
    states = [s for s in (op.state(t) for t in tensors) if s is not None]
    if not states:
        return [None]
    out = op.outputs[0]
    stacking = op.name == "stack"
    d = int(op.bound.get("dim", 0)) % out.dim()
    # Legacy cat skips 1-d empty tensors; they carry no positions.
    parts = [op.layout_of(t) for t in tensors if not (t.dim() == 1 and t.numel() == 0)]
    if stacking:
        parts = [lay[:d] + (_plain_dim(1),) + lay[d:] for lay in parts]
    # Every dimension but the concatenated one is shared: take it from an input that holds image axes there.
    layout: list[_Dim] = []
    for j in range(out.dim()):
        candidates = [lay[j] for lay in parts if j < len(lay)]
        layout.append(next((dim for dim in candidates if _axes_in(dim)), candidates[0]))
    exact = True
    along = [lay[d] for lay in parts]
    if any(_axes_in(dim) for dim in along):
        # Maps laid side by side along an image axis: unit positions no longer follow one jump.
        exact = False
        first = next(dim for dim in along if _axes_in(dim))
        layout[d] = first
    else:
        layout[d] = _plain_dim(int(out.shape[d]))
    merged = _merge(states, tuple(layout), op.tracker.ignore_context)
    return [_fit(replace(merged, exact=merged.exact and exact), out.shape)]


@_rule("pixel_unshuffle")
def _pixel_unshuffle(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    r = int(op.arg("downscale_factor"))
    c = x.dim() - 3

    def relayout(layout: _Layout) -> _Layout:
        return layout[:c] + (_plain_dim(int(op.outputs[0].shape[c])),) + layout[c + 1 :]

    # Each output location gathers an r x r block of input locations into its channels.
    return _windowed(op, x, [r, r], [r, r], [0, 0], relayout)


@_rule(
    "pixel_shuffle",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "upsample_trilinear3d",
    "upsample_bicubic2d",
    "_upsample_bilinear2d_aa",
    "_upsample_bicubic2d_aa",
)
def _upsample(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self", "input")
    state = op.state(x)
    if state is None:
        return [None]
    out = op.outputs[0]
    nsp = 2 if op.name == "pixel_shuffle" else _spatial_rank(op.name)
    # Taps on either side of the sampled position: nearest reads 1 unit, linear 2, cubic 4.
    before, after = (1, 2) if "cubic" in op.name else (0, 1) if "linear" in op.name else (0, 0)
    axes = list(state.axes)
    for i in range(nsp):
        d = x.dim() - nsp + i
        axis = _single_axis(state.layout[d])
        if axis is None or axes[axis].full:
            continue
        a = axes[axis]
        factor = Fraction(int(out.shape[d]), int(x.shape[d]))
        axes[axis] = _Axis(jump=a.jump / factor, start=a.start - before * a.jump, end=a.end + after * a.jump)
    layout = state.layout
    if op.name == "pixel_shuffle":
        c = x.dim() - 3
        layout = layout[:c] + (_plain_dim(int(out.shape[c])),) + layout[c + 1 :]
    # Output units map to input units through a floor, not an affine map: the jump is an average.
    return [_fit(_State(tuple(axes), layout, exact=False), out.shape)]


_NORMALISATIONS = frozenset(
    {
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit_functional",
        "_batch_norm_with_update",
        "_batch_norm_no_update",
        "_batch_norm_with_update_functional",
        "cudnn_batch_norm",
        "miopen_batch_norm",
        "batch_norm",
        "native_layer_norm",
        "layer_norm",
        "native_group_norm",
        "group_norm",
        "instance_norm",
        "rms_norm",
        "_fused_rms_norm",
        "_batch_norm_impl_index",
        "native_batch_norm_backward",
    }
)
# Shape-preserving operators that read one position per output position, beyond those tagged pointwise.
_ELEMENTWISE = frozenset(
    {
        "_to_copy",
        "to",
        "contiguous",
        "detach",
        "alias",
        "lift",
        "lift_fresh",
        "lift_fresh_copy",
        "clone",
        "dropout",
        "native_dropout",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "hardswish",
        "_prelu_kernel",
        "prelu",
        "relu",
        "_conj",
        "resolve_conj",
        "resolve_neg",
        "type_as",
        "_autocast_to_reduced_precision",
        "_autocast_to_full_precision",
        "as_strided_scatter",
        "channel_shuffle",
        "native_channel_shuffle",
        "_assert_tensor_metadata",
        "glu",
    }
)
# Operators whose result does not depend on the values of their tensor inputs.
_CONSTANT = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_empty_strided",
        "fill",
        "zero",
        "empty",
        "zeros",
        "ones",
        "full",
        "arange",
        "scalar_tensor",
        "empty_strided",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "_shape_as_tensor",
    }
)
# Shape-preserving operators that move positions around (circularly or mirrored): approximate as per-pixel.
_PERMUTING = frozenset({"roll", "flip", "fliplr", "flipud", "rot90"})


def _pointwise(op: _Op) -> list[_State | None]:
    """Element-wise operators with broadcasting: the output position sees the union of its inputs' fields."""
    tensors = [t for t in tree_leaves(list(op.bound.values())) if isinstance(t, torch.Tensor)]
    states = [s for s in (op.state(t) for t in tensors) if s is not None]
    if not states:
        return [None] * len(op.outputs)
    # Where maps of different resolution meet (a window-partitioned branch added back to its input), the
    # merged jump is the coarser one, so the layout must come from the coarser operand to stay consistent.
    tensors.sort(key=lambda t: -_coarseness(op.state(t)))
    operands = [(op.layout_of(t), list(t.shape)) for t in tensors]
    result: list[_State | None] = []
    for out in op.outputs:
        layout = _broadcast_layout(operands, out.shape)
        result.append(_fit(_merge(states, layout, op.tracker.ignore_context), out.shape))
    return result


def _coarseness(state: _State | None) -> Fraction:
    if state is None:
        return Fraction(0)
    return max((a.jump for a in state.axes if not a.full), default=Fraction(0))


@_rule(*_NORMALISATIONS)
def _normalisation(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("input", "self")
    state = op.state(x)
    if state is None:
        return [None] * len(op.outputs)
    # Only the first output is the normalised map; saved statistics get a plain layout of their own shape.
    first = _fit(state, op.outputs[0].shape) if op.outputs else None
    rest: list[_State | None] = [replace(state, layout=_plain_layout(t.shape)) for t in op.outputs[1:]]
    return [first, *rest]


@_rule("copy_", "copy")
def _copy(op: _Op) -> list[_State | None]:
    src = op.arg("src")
    state = op.state(src)
    if state is None:
        return [None] * len(op.outputs)
    out = op.outputs[0]
    return [_fit(replace(state, layout=_broadcast_layout([(state.layout, src.shape)], out.shape)), out.shape)]


@_rule("as_strided", "as_strided_copy")
def _as_strided(op: _Op) -> list[_State | None]:
    x: torch.Tensor = op.arg("self")
    state = op.state(x)
    if state is None:
        return [None]
    # Kernels restride their result to a memory format (channels-last) in place: same shape, same values.
    if [int(s) for s in op.arg("size")] == list(x.shape) and not op.bound.get("storage_offset"):
        return [state]
    return _fallback(op)


@_rule(*_PERMUTING)
def _permuting(op: _Op) -> list[_State | None]:
    return [replace(s, exact=False) if s is not None else None for s in _pointwise(op)]


def _fallback(op: _Op) -> list[_State | None]:
    """Unknown operator: per-pixel when an output keeps an input's shape, otherwise global; inexact."""
    tensors = [t for t in tree_leaves(list(op.bound.values())) if isinstance(t, torch.Tensor)]
    stateful = [(t, s) for t in tensors if (s := op.state(t)) is not None]
    if not stateful:
        return [None] * len(op.outputs)
    op.tracker.note_unknown(op.name)
    result: list[_State | None] = []
    for out in op.outputs:
        same = [s for t, s in stateful if tuple(t.shape) == tuple(out.shape)]
        if same:
            merged = _merge([s for _, s in stateful], same[0].layout, op.tracker.ignore_context)
            result.append(replace(merged, exact=False))
        else:
            merged = _merge([s for _, s in stateful], stateful[0][1].layout, op.tracker.ignore_context)
            result.append(_globalise(merged, out.shape))
    return result


# --------------------------------------------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------------------------------------------


def _bind(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name an operator's arguments after its schema, filling in defaults."""
    bound: dict[str, Any] = {}
    for i, argument in enumerate(func._schema.arguments):
        if i < len(args) and not argument.kwarg_only:
            bound[argument.name] = args[i]
        elif argument.name in kwargs:
            bound[argument.name] = kwargs[argument.name]
        elif argument.has_default_value():
            bound[argument.name] = argument.default_value
    return bound


_POINTWISE_CACHE: dict[str, bool] = {}


def _is_pointwise(func: Any, name: str) -> bool:
    if name in _POINTWISE_CACHE:
        return _POINTWISE_CACHE[name]
    tagged = torch.Tag.pointwise in func.tags
    if not tagged and name.endswith("_") and not name.endswith("__"):
        # In-place variants (relu_, hardtanh_) are not always tagged; their functional twin is.
        packet = getattr(torch.ops.aten, name[:-1], None)
        if packet is not None:
            tagged = any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
    base = name[:-1] if name.endswith("_") else name
    _POINTWISE_CACHE[name] = tagged or name in _ELEMENTWISE or base in _ELEMENTWISE
    return _POINTWISE_CACHE[name]


class _Tracker(TorchDispatchMode):
    """Dispatch mode that carries a :class:`_State` along every tensor derived from the image."""

    def __init__(self, spatial_dims: int, ignore_context: bool, constants: set[int]) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.ignore_context = ignore_context
        self.constants = constants  # ids of parameters and buffers: known not to depend on the image
        self.states: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.active = True
        self._unknown: set[str] = set()
        self._untracked = 0

    def seed(self, image: torch.Tensor, sizes: Sequence[int]) -> None:
        """Register the input image: unit u of axis i is pixel u, so J = 1 and the field is [0, 0]."""
        axes = tuple(_Axis(Fraction(1), Fraction(0), Fraction(0)) for _ in sizes)
        layout = _plain_layout(image.shape[: image.dim() - len(sizes)]) + tuple(
            ((i, int(n)),) for i, n in enumerate(sizes)
        )
        self.states[image] = _State(axes, layout)

    def state_of(self, tensor: torch.Tensor) -> _State | None:
        if tensor in self.states:
            state: _State | None = self.states[tensor]
            return state
        if id(tensor) not in self.constants:
            # A tensor created outside the dispatcher (torch.tensor(...) literal, or a cached constant):
            # it cannot depend on the image. Counted so tests can assert nothing slipped through.
            self._untracked += 1
            logger.debug("untracked tensor of shape %s treated as a constant", tuple(tensor.shape))
        return None

    def state_of_output(self, output: Any) -> _State | None:
        """Field of a module's return value: the union over the tensors it returns."""
        states = [
            s for t in tree_leaves(output) if isinstance(t, torch.Tensor) and (s := self.states.get(t)) is not None
        ]
        if not states:
            return None
        if len(states) == 1:
            return states[0]
        return _merge(states, states[0].layout, self.ignore_context)

    def note_unknown(self, name: str) -> None:
        if name not in self._unknown:
            self._unknown.add(name)
            logger.debug("receptive field: no rule for aten.%s; approximated (exact=False)", name)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.active:
            try:
                self._propagate(func, args, kwargs, out)
            except Exception:
                # A bug in one rule must not take the app down; fall back to the conservative answer.
                logger.exception("receptive field rule for %s failed; treating it as global", func)
                self._propagate(func, args, kwargs, out, force_fallback=True)
        return out

    def _propagate(self, func: Any, args: Any, kwargs: Any, out: Any, force_fallback: bool = False) -> None:
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outputs:
            return
        name: str = func.overloadpacket.__name__
        op = _Op(name, _bind(func, args, kwargs), outputs, self)
        states: list[_State | None]
        if name in _CONSTANT or (name.endswith("_") and name[:-1] in _CONSTANT):
            states = [None] * len(outputs)
        elif force_fallback:
            states = _fallback(op)
        elif name in _RULES:
            states = _RULES[name](op)
        elif name.endswith("_") and name[:-1] in _RULES and name[:-1] not in ("copy",):
            states = _RULES[name[:-1]](op)
        elif _is_pointwise(func, name):
            states = _pointwise(op)
        else:
            states = _fallback(op)
        for tensor, state in zip(outputs, states, strict=False):
            self.states[tensor] = state
        # In-place and out= operators: the written argument now holds the result.
        for argument in func._schema.arguments:
            info = argument.alias_info
            target = op.bound.get(argument.name)
            if (
                info is not None
                and info.is_write
                and isinstance(target, torch.Tensor)
                and id(target) not in self.constants  # e.g. BN running stats: never image-dependent
                and states
            ):
                self.states[target] = states[0]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _normalise_size(input_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    if isinstance(input_size, int):
        sizes: tuple[int, ...] = (input_size,) * spatial_dims
    else:
        sizes = tuple(int(s) for s in input_size)
        if len(sizes) != spatial_dims:
            raise ValueError(f"input_size {input_size!r} does not have {spatial_dims} spatial sizes")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    return sizes


def _guess_in_chans(model: torch.nn.Module) -> int:
    """Input channels of the first convolution in module order; 3 when there is none."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return 3


def _report(state: _State, sizes: Sequence[int]) -> ReceptiveField:
    per_axis: list[AxisField] = []
    for axis in state.axes:
        span = axis.end - axis.start + 1
        per_axis.append(
            AxisField(
                rf_px=math.ceil(span),
                stride_px=max(1, round(axis.jump)),
                padding_px=float(-axis.start),
                is_global=axis.full,
            )
        )
    exact = state.exact and all(
        a.jump.denominator == 1 and a.start.denominator == 1 and a.end.denominator == 1 for a in state.axes
    )
    widest = max(range(len(per_axis)), key=lambda i: per_axis[i].rf_px)
    main = per_axis[widest]
    covers = all(f.is_global or f.rf_px >= n for f, n in zip(per_axis, sizes, strict=True))
    return ReceptiveField(
        rf_px=main.rf_px,
        stride_px=main.stride_px,
        padding_px=main.padding_px,
        covers_input=covers,
        is_global=all(f.is_global for f in per_axis),
        exact=exact,
        axes=tuple(per_axis),
    )
