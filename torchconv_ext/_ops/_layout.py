"""Operands in the layout the tensor-core kernels load fastest: channels innermost.

The implicit-GEMM kernels read channels-inner operands with 16-byte vector loads (``cp.async``)
straight into tensor-core tiles; any other layout (torch's default NCHW above all) falls back to
one scalar load per element. So, on the Triton path:

* activations (input, grad_output) are converted to channels-last with one copy when they are not
  already (:func:`channels_last_activation`; the 1×1 GEMM reads NCHW rows of 16 positions as
  they are: ``conv.gemm_activation``) — one copy per derivative, which reads the incoming
  gradient in two gradient primitives (:func:`converting_once`) — and
* weights are repacked channels-last (:func:`packed_weight`) — or, for the narrow convolutions
  that read windows of a padded copy, into the windows' layout (``triton_kernels.window_weight``:
  ``form`` ``"windows"``, and ``"windows_input_gradient"`` for the flipped, transposed weight
  of their input gradient), or for groups of a few channels computed several at a time into
  the block-diagonal weight of the merged groups (``triton_kernels.merged_weight``: ``form``
  ``"merged_groups"``, which the forward and the input gradient read), or for a locally
  connected or tiled convolution's weight ``(*tiles, C_out, C_in/groups, *kernel)`` with its
  input channels innermost (``form`` ``"local_channels_inner"``), or for a depthwise
  convolution over channels-last activations its weight ``(C·mult, 1, *kernel)`` with the
  channels innermost (``form`` ``"depthwise_channels_inner"``: each tap's weights for a vector
  of channels, ``triton_kernels.reads_channels_inner_weight``) — and a module's
  weights — its ``nn.Parameter`` objects — once per version and form: the repacked copy is
  cached by form, data pointer, shape, strides, dtype and device, valid while the same storage
  is alive and its version counter
  (``Tensor._version``, bumped by every in-place write through the tensor or a view: an
  optimizer step, ``load_state_dict``, ``torch.no_grad()`` updates) has not moved. Training then
  repacks each weight once per optimizer step, inference never, and a write makes the next
  call repack instead of reading a stale copy. A copy read on another stream than the one it
  was packed on is recorded on that stream (``record_stream``): when the cache drops it, its
  memory waits for the kernels there.

Results keep the layout torch would return (the kernels store into it directly, or store
channels-last rows converted once: see ``conv``).

Only parameters are cached because only writes that bump the version counter can be seen:
writes through ``.data`` cannot (``torch.autograd.gradcheck`` perturbs its inputs that way, so
plain tensors — functional weights, gradients — are repacked on every call), and so are
parameters made under ``torch.inference_mode()`` (inference tensors have no version counter; a
model built outside it, or moved to channels-last, repacks nothing there). Every optimizer step
(``torch.optim.Optimizer``, and the libraries' optimizers built on it) also forgets the copies
of the parameters it stepped: fused optimizers (``fused=True``) write parameters without
bumping their version counters, and some optimizers write through ``.data``. Code that writes
parameters past their version counter outside an optimizer's step (``p.data.add_(...)``, as
weight clipping and some moving averages of weights are written; collectives filling a
parameter's storage in place, as FSDP's all-gathers do; ``vector_to_parameters``, and later
writes into its vector; writes into ``t`` after ``p.data = t``) must call
``torchconv_ext.clear_weight_cache()`` after such writes, or set
``TORCHCONV_EXT_WEIGHT_CACHE=0`` (read at import) to repack on every call.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .._backend import env_flag, kernels
from .._memory import to_layout

#: Most weights the cache holds (least recently used first out).
CAPACITY = 256

_CL_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}

#: Per (kind, data pointer): the weight's storage (weakly), its version, the packed copy and
#: (on a GPU) the raw stream it was packed on.
_entries: OrderedDict[tuple, tuple[weakref.ref, int, torch.Tensor, int | None]] = OrderedDict()
_kinds: dict[tuple, int] = {}
_kind_numbers = itertools.count()
_lock = threading.RLock()
_stats = {"hits": 0, "packs": 0}


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is dense with channels (dim 1) innermost, for any rank."""
    fmt = _CL_FORMATS.get(t.dim())
    if fmt is not None:
        return t.is_contiguous(memory_format=fmt)
    return to_layout(t, True, exact=False) is t


class _Conversions(threading.local):
    """Per thread, inside :func:`converting_once`: each activation's channels-last copy by the
    activation's id (the activation is held beside it, so no id is reused meanwhile)."""

    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None


_conversions = _Conversions()


def channels_last_activation(t: torch.Tensor) -> torch.Tensor:
    """``t`` channels-last: itself when it already is, else a copy (one pass; one per call of
    :func:`converting_once`)."""
    if is_channels_last(t):
        return t
    copies = _conversions.copies
    if copies is None:
        return to_layout(t, True)
    entry = copies.get(id(t))
    if entry is None:
        entry = copies[id(t)] = (t, to_layout(t, True))
    return entry[1]


def converting_once(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, converting each activation to channels-last at most once: the gradient
    primitives of one derivative (a convolution's input and weight gradients) read the same
    incoming gradient, and each would copy it. The copies are inputs of kernels only (nothing
    writes them), and they are dropped on return."""
    if _conversions.copies is not None:  # (an enclosing call shares its copies)
        return fn(*args)
    _conversions.copies = {}
    try:
        return fn(*args)
    finally:
        _conversions.copies = None


#: Whether parameters' repacked copies are cached (``TORCHCONV_EXT_WEIGHT_CACHE=0``: never).
ENABLED: bool = env_flag("TORCHCONV_EXT_WEIGHT_CACHE", True)


#: The forms a weight is repacked into (module doc).
FORMS = ("channels_last", "windows", "windows_input_gradient", "merged_groups",
         "local_channels_inner", "depthwise_channels_inner")  # fmt: skip


def _local_input_channels(w: torch.Tensor) -> int:
    """The dim of a locally connected or tiled weight's input channels: ``(*tiles, C_out,
    C_in/groups, *kernel)`` has as many tile dims as kernel dims."""
    return w.dim() // 2


#: The forms that move one channel dim innermost, and which dim.
_CHANNEL_INNER_DIM: dict[str, Callable[[torch.Tensor], int]] = {
    "local_channels_inner": _local_input_channels,
    "depthwise_channels_inner": lambda w: 0,  # (C·mult, 1, *kernel)
}


def _pack(w: torch.Tensor, form: str, groups: int) -> torch.Tensor:
    _stats["packs"] += 1
    with torch.no_grad():
        if form == "channels_last":
            return to_layout(w, True)
        if form == "merged_groups":
            return kernels().merged_weight(w, groups)
        if form in _CHANNEL_INNER_DIM:
            dim = _CHANNEL_INNER_DIM[form](w)
            return w.movedim(dim, -1).contiguous().movedim(-1, dim)
        return kernels().window_weight(w, input_gradient=form == "windows_input_gradient")


def _is_packed(w: torch.Tensor, form: str) -> bool:
    """Whether ``w`` is already in ``form`` (the forms a tensor can simply have)."""
    if form == "channels_last":
        return is_channels_last(w)
    if form in _CHANNEL_INNER_DIM:
        dim = _CHANNEL_INNER_DIM[form](w)
        return w.stride(dim) == 1 or w.shape[dim] == 1
    return False


def packed_weight(w: torch.Tensor, form: str = "channels_last", groups: int = 1) -> torch.Tensor:
    """``w`` in ``form`` (one of :data:`FORMS`; ``groups``: the convolution's, which the form
    ``"merged_groups"`` depends on); a parameter is repacked at most once per version (module
    doc)."""
    if _is_packed(w, form):
        return w
    device = w.device
    if not isinstance(w, torch.nn.Parameter) or (device.type == "cuda" and _capturing()):
        return _pack(w, form, groups)
    kind = _kind(form, groups, w.shape, w.stride(), w.dtype, device)
    return _cached(w, form=form, groups=groups, kind=kind)


def _packed_weight_for_replays(
    w: torch.Tensor, form: str = "channels_last", groups: int = 1
) -> Callable[..., torch.Tensor]:
    """:func:`packed_weight` for a tape's replays, whose weights have ``w``'s type, shape,
    strides, dtype and device, and the same ``form`` and ``groups``: what those decide is
    decided once (a replay's lookup costs a fraction of a full one)."""
    if _is_packed(w, form):
        return _unchanged
    if not isinstance(w, torch.nn.Parameter):
        return packed_weight  # (never cached)
    kind = _kind(form, groups, w.shape, w.stride(), w.dtype, w.device)
    # (a partial, called from C: a replay's lookup runs one Python frame, the cache's)
    capturable = w.device.type == "cuda"
    return functools.partial(_cached, form=form, groups=groups, kind=kind, capturable=capturable)


packed_weight.for_replays = _packed_weight_for_replays  # type: ignore[attr-defined]


def _unchanged(w: torch.Tensor, *_: Any) -> torch.Tensor:
    return w


def _capturing() -> bool:
    # A graph being captured must record the repack itself: a cached copy would be replayed
    # stale after the weight changes.
    return torch.cuda.is_current_stream_capturing()


def _kind(*form_and_metadata: Any) -> int:
    """The number of a form, groups, shape, strides, dtype and device: half of a cache key (a
    key of two ints hashes in a fraction of the time of one with sizes and strides). Numbers
    are never reused: a kind forgotten here takes a new one, and its old entries are misses."""
    number = _kinds.get(form_and_metadata)
    if number is None:
        if len(_kinds) >= 4 * CAPACITY:
            _kinds.clear()
        number = _kinds[form_and_metadata] = next(_kind_numbers)
    return number


def _cached(
    w: torch.Tensor, *_: Any, form: str, groups: int, kind: int, capturable: bool = False
) -> torch.Tensor:
    """The parameter ``w`` in ``form``, from the cache while its storage and version are those
    it was packed from; ``kind``: the number of its form and metadata (:func:`_kind`). With
    ``capturable`` (a weight on CUDA), repacked while a CUDA graph is captured. A replay passes
    the recorded call's other arguments too (``_``: what ``kind`` holds already)."""
    if capturable and _capturing():
        return _pack(w, form, groups)
    try:
        version = w._version
    except RuntimeError:  # an inference tensor (made under torch.inference_mode): no version
        return _pack(w, form, groups)
    if not ENABLED:
        return _pack(w, form, groups)
    key = (kind, w.data_ptr())
    storage = w.untyped_storage()
    entry = _entries.get(key)
    if entry is not None and entry[0]() is storage and entry[1] == version:
        _stats["hits"] += 1
        try:  # noqa: SIM105 (contextlib.suppress costs a µs on every call)
            _entries.move_to_end(key)
        except KeyError:  # another thread evicted it meanwhile
            pass
        if entry[3] is not None:
            _mark_use_on_stream(entry[2], entry[3], entry[4])
        return entry[2]
    packed = _pack(w, form, groups)
    # The entry dies with the weight's storage (so a new tensor at the same address never
    # finds it, and the packed copy is freed with the weight).
    ref = weakref.ref(storage, functools.partial(_forget, key))
    if not _watching_optimizers:
        _watch_optimizers()
    # (the stream it is packed on, and its device's index: a hit compares streams without
    # asking the copy for its device, a new object each time)
    index = packed.device.index if packed.is_cuda else None
    stream = _raw_stream(index) if index is not None else None
    with _lock:
        _entries[key] = (ref, version, packed, stream, index)
        _entries.move_to_end(key)
        while len(_entries) > CAPACITY:
            _entries.popitem(last=False)
    return packed


#: torch's raw current stream, as Triton's NVIDIA driver reads it at each launch (absent from
#: CPU builds of torch: there, as under the stand-in GPU of the benchmarks, Triton's driver).
_torch_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _raw_stream(device_index: int) -> int:
    """The stream our kernels launch on now (a cache hit asks it: kept to one C call)."""
    if _torch_raw_stream is not None:
        return _torch_raw_stream(device_index)
    return kernels().current_stream(device_index)


def _mark_use_on_stream(packed: torch.Tensor, packed_on: int, device_index: int) -> None:
    """Tell the allocator that ``packed`` (on CUDA device ``device_index``) is read on the
    current stream when that is not the stream it was packed on: when the cache drops it (a
    new version, an eviction) its memory is reused on the packing stream, and must wait for the
    kernels that read it here."""
    if _raw_stream(device_index) != packed_on:
        packed.record_stream(torch.cuda.current_stream(packed.device))


#: Whether :func:`_after_optimizer_step` follows every optimizer's steps (from the first entry).
_watching_optimizers = False


def _watch_optimizers() -> None:
    global _watching_optimizers
    with _lock:
        if not _watching_optimizers:
            register_optimizer_step_post_hook(_after_optimizer_step)
            _watching_optimizers = True


def _after_optimizer_step(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    """Forget the packed copies of the parameters an optimizer has just stepped. Fused
    optimizers (``SGD``, ``Adam``, ``AdamW`` with ``fused=True``) write parameters without
    bumping their version counters, as do optimizers that write through ``.data``: a step is
    where training writes its weights, whatever the optimizer."""
    stepped = {p.data_ptr() for group in optimizer.param_groups for p in group["params"]}
    with _lock:
        for key in [key for key in _entries if key[1] in stepped]:
            _entries.pop(key, None)


def _forget(key: tuple, ref: weakref.ref) -> None:
    # A weakref callback: it may run inside any code of this thread, so it takes no lock.
    entry = _entries.get(key)
    if entry is not None and entry[0] is ref:
        _entries.pop(key, None)


def clear_weight_cache() -> None:
    """Forget every repacked weight (after writes the version counter cannot see) and reset
    the counters of :func:`weight_cache_info`."""
    with _lock:
        _entries.clear()
        _stats.update(hits=0, packs=0)


def weight_cache_info() -> dict[str, int]:
    """``{"entries", "hits", "packs"}``: the cache's size, its hits and all repacks so far."""
    return {"entries": len(_entries), **_stats}
