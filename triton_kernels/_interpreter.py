"""Triton's CPU interpreter (``TRITON_INTERPRET=1``), adapted for our kernels.

Tests and CPU users run every kernel on the interpreter, which executes each ``tl`` operation
of each program through Triton's own Python: type checks, broadcasting, and a new block type and
tensor for every result. The adaptations here change no result; they make it safe to launch from
several threads, refuse a NumPy it cannot use, and drop work whose outcome is already known:

* the integer-overflow sanitizer, whose checks the interpreter discards;
* the language's patching at every call of a ``@triton.jit`` helper, inside a launch that has
  already patched it;
* the shape of every block type and tensor rebuilt from scratch, and the same type rules
  looked up again (the type of a binary operation's operands, the NumPy dtype of a Triton one):
  a kernel makes a few shapes and types, millions of times.

And one fault is mended, where a kernel that compiles fails here: a scalar condition combined
with a block of them (``row_ok & (i_h >= 0)``) came out as integers, which a load's mask refuses.

:func:`adapt_the_interpreter` applies them all, once, when the kernels are imported under the
interpreter (``_common``).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import threading
from typing import Any

import triton.language as tl

__all__ = ["adapt_the_interpreter"]


def adapt_the_interpreter() -> None:
    """Apply every adaptation of the module doc (each at most once per process)."""
    _refuse_numpy_the_interpreter_cannot_use()
    _interpret_without_overflow_sanitizer()
    _interpret_device_calls_without_repatching()
    _interpret_one_launch_at_a_time()
    _interpret_shapes_once()
    _interpret_type_rules_once()
    _interpret_scalar_conditions_over_blocks()


def _interpret_without_overflow_sanitizer() -> None:
    """Under the interpreter, Triton redoes every int32 add, sub and mul in int64 to check for
    overflow, then drops the check unless its ``debug`` option is set, which the interpreter's
    options never are: half the interpreter's time on our kernels, for nothing. Turn it off."""
    from triton.runtime import interpreter

    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if options is not None and not options.debug and hasattr(options, "sanitize_overflow"):
        builder.options = dataclasses.replace(options, sanitize_overflow=False)


def _interpret_device_calls_without_repatching() -> None:
    """Under the interpreter, a launch points ``triton.language``'s functions at interpreted
    ones for its duration (``_patch_lang``, undone at its end) — and so does every call of a
    ``@triton.jit`` helper inside it, again, through ``inspect.getmembers`` of four modules,
    never undone: a third of the interpreter's time on our kernels, which call helpers in
    their loops, for nothing while the launch's patch stands. Skip the repeat. A launch patches
    both language modules (``triton.language`` and ``triton.language.core``), whichever its
    kernel sees, so that it covers every helper: Triton's own (``tl.cdiv``, ``tl.zeros``) see
    ``core`` only, and would otherwise patch it anew at every call inside a kernel that sees
    ``tl``."""
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang", None)
    if patch is None or getattr(patch, "repeats_skipped", False):
        return
    standing = 0  # launches whose patch is not yet undone (a launch's helpers run inside it)

    class _Nothing:
        def restore(self) -> None:
            pass

    # What a launch's patch reads of its kernel: the language modules it sees (both, here).
    both = type("BothLanguages", (), {"__globals__": {"tl": tl, "core": tl.core}})

    def patch_once(fn):
        nonlocal standing
        if standing:  # a helper called inside a launch: both modules are patched already
            return _Nothing()
        scope = patch(both)
        undo = scope.restore
        standing += 1

        def restore() -> None:
            nonlocal standing
            standing -= 1
            undo()

        scope.restore = restore
        return scope

    patch_once.repeats_skipped = True
    interpreter._patch_lang = patch_once


def _interpret_one_launch_at_a_time() -> None:
    """The interpreter runs a launch on module-level state (the grid, the patched language
    functions, and ours above), which two threads launching at once overwrite for each other:
    their kernels fail inside it or compute with the other's grid. Launches from several
    threads take turns (a GPU's launches need no such lock)."""
    from triton.runtime import interpreter

    executor = getattr(interpreter, "GridExecutor", None)
    if executor is None or getattr(executor.__call__, "one_at_a_time", False):
        return
    launch = executor.__call__
    lock = threading.RLock()

    @functools.wraps(launch)
    def one_at_a_time(self, *args, **kwargs):
        with lock:
            return launch(self, *args, **kwargs)

    one_at_a_time.one_at_a_time = True
    executor.__call__ = one_at_a_time


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What Triton derives from one block shape, derived once: a block type's ``shape``
    (a Triton tuple of ints, rebuilt per block type from its values and type), ``numel`` and
    the shape part of its name; a tensor's ``numel`` and ``shape`` (constexprs)."""

    dims: list[int]
    dims_type: Any
    text: str
    numel: int
    tensor_numel: Any
    tensor_dims: list[Any]
    tensor_dims_type: Any

    @classmethod
    def of(cls, block: Any) -> _Shape:
        core = tl.core
        dims = list(block.shape)
        tensor_dims = [core.constexpr(d) for d in dims]
        return cls(
            dims, block.shape.type, str(block.shape), block.numel,
            core.constexpr(block.numel), tensor_dims, core.tuple(tensor_dims).type,
        )  # fmt: skip


def _dims(shape: Any) -> tuple[int, ...] | None:
    """``shape`` as a block type takes it (a list or a Triton tuple of ints or int constexprs)
    as plain ints, or None where it is anything else (Triton then checks it as always)."""
    core = tl.core
    if type(shape) not in (list, core.tuple):
        return None
    dims = builtins.tuple(d.value if isinstance(d, core.constexpr) else d for d in shape)
    return dims if dims and all(type(d) is int for d in dims) else None


def _interpret_shapes_once() -> None:
    """Every operation's result is a new block type, which unwraps its shape, checks each dim is
    a power of two and names itself, and a new tensor, which rebuilds the shape as constexprs
    in a Triton tuple that infers each element's type: a third of the interpreter's time, on a
    few shapes per kernel. Derive them once per shape (:class:`_Shape`) and build each object
    from that. Each new object gets fresh containers, as Triton's own construction does; a
    block type of a shape never seen is built by Triton (its checks and errors unchanged). If
    this Triton's objects hold more than the adaptation knows, nothing is changed."""
    core = tl.core
    block_type, tensor = core.block_type, core.tensor
    if getattr(block_type.__init__, "shapes_once", False):
        return
    build_block, build_tensor = block_type.__init__, tensor.__init__
    shapes: dict[tuple[int, ...], _Shape] = {}
    scalar_numel, scalar_dims_type = core.constexpr(1), core.tuple([]).type

    def init_block(self, element_ty, shape) -> None:
        # Triton's own operations pass a list of ints or a Triton tuple of them: looked up as
        # they are; anything else (ints as constexprs) after unwrapping.
        kind = type(shape)
        plain = shape if kind is list else shape.values if kind is core.tuple else ()
        try:
            known = shapes.get(builtins.tuple(plain))
        except TypeError:  # (an unhashable dim: Triton refuses it below)
            known = None
        if known is None:
            dims = _dims(shape)
            known = shapes.get(dims) if dims is not None else None
            if known is None:
                build_block(self, element_ty, shape)
                if dims is not None:
                    shapes[dims] = _Shape.of(self)
                return
        self.element_ty = element_ty
        self.shape = core.tuple(known.dims, known.dims_type)  # (a list of its own)
        self.numel = known.numel
        self.name = f"<{known.text}, {element_ty}>"

    def init_tensor(self, handle, type) -> None:
        self.handle = handle
        self.type = type
        self.dtype = type.scalar
        if type.is_block():
            dims = builtins.tuple(type.shape.values)
            known = shapes.get(dims)
            if known is None:
                shapes[dims] = known = _Shape.of(type)
            self.numel = known.tensor_numel
            self.shape = core.tuple(known.tensor_dims, known.tensor_dims_type)
        else:
            self.numel = scalar_numel
            self.shape = core.tuple((), scalar_dims_type)

    if not _same_objects(build_block, init_block, build_tensor, init_tensor):
        return
    block_type.__init__ = functools.update_wrapper(init_block, build_block)
    tensor.__init__ = functools.update_wrapper(init_tensor, build_tensor)
    init_block.shapes_once = True


def _same_objects(build_block, init_block, build_tensor, init_tensor) -> bool:
    """Whether the adapted constructors make what Triton's make (the same attributes, equal as
    Triton prints them), for a block type built twice (the second from what the first
    derived), its tensor, and a scalar tensor."""
    core = tl.core

    def made(cls, init, *args) -> dict[str, str]:
        obj = cls.__new__(cls)
        init(obj, *args)
        return {name: f"{type(v).__name__}:{v}" for name, v in vars(obj).items()}

    made(core.block_type, init_block, tl.float32, [4, 8])  # derives the shape
    triton_made = made(core.block_type, build_block, tl.float32, [4, 8])
    for shape in ([4, 8], [4, core.constexpr(8)], core.tuple([4, 8])):  # from what it derived
        if made(core.block_type, init_block, tl.float32, shape) != triton_made:
            return False
    typed = core.block_type(tl.float32, [4, 8])
    for ty in (typed, tl.int32):
        if made(core.tensor, build_tensor, None, ty) != made(core.tensor, init_tensor, None, ty):
            return False
    return True


def _interpret_type_rules_once() -> None:
    """Two pure functions of types run for nearly every interpreted operation: the type both
    operands of a binary operation are cast to (``computation_type_impl``: of the two types,
    whether each is a scalar, and whether it divides; per rules class) and the NumPy dtype holding a Triton
    type's values (``_get_np_dtype``, which builds its whole table at each call, and reads a
    block type's element type). Remember each answer. (Pointer types have no hash: asked
    anew.)"""
    from triton.language import semantic
    from triton.runtime import interpreter

    rules = getattr(semantic, "TritonSemantic", None)
    computation_type = getattr(rules, "computation_type_impl", None)
    if computation_type is not None and not getattr(computation_type, "remembered", False):
        types: dict[tuple, Any] = {}

        def computation_type_remembered(self, *operands):
            question = (type(self), *operands)  # (a subclass may promote otherwise)
            try:
                return types[question]
            except KeyError:
                types[question] = answer = computation_type(self, *operands)
                return answer
            except TypeError:  # an unhashable type
                return computation_type(self, *operands)

        computation_type_remembered.remembered = True
        rules.computation_type_impl = functools.update_wrapper(
            computation_type_remembered, computation_type
        )

    np_dtype = getattr(interpreter, "_get_np_dtype", None)
    if np_dtype is None or getattr(np_dtype, "remembered", False):
        return
    block_type, pointer_type = tl.core.block_type, tl.core.pointer_type
    dtypes: dict[Any, Any] = {}

    def np_dtype_remembered(ty):
        scalar = ty.element_ty if isinstance(ty, block_type) else ty
        if isinstance(scalar, pointer_type):
            return np_dtype(ty)
        try:
            return dtypes[scalar]
        except KeyError:
            dtypes[scalar] = answer = np_dtype(scalar)
            return answer

    # A block type's values are held as its element type's are (as Triton's table says).
    if np_dtype(block_type(tl.bfloat16, [2])) != np_dtype(tl.bfloat16):
        return
    np_dtype_remembered.remembered = True
    interpreter._get_np_dtype = functools.update_wrapper(np_dtype_remembered, np_dtype)


def _interpret_scalar_conditions_over_blocks() -> None:
    """The interpreter holds a comparison's values as bools but labels them with its operands'
    type, and splats a scalar over a block in the dtype of that label: a scalar condition
    ``&`` a block of conditions became a block of int32, which a load's or store's mask
    refuses (``mask has unsupported dtype``). Splat bools as bools."""
    from triton.runtime import interpreter

    builder = getattr(interpreter, "InterpreterBuilder", None)
    splat = getattr(builder, "create_splat", None)
    if splat is None or getattr(splat, "keeps_bools", False):
        return

    def create_splat_keeping_bools(self, ret_ty, arg):
        out = splat(self, ret_ty, arg)
        if arg.data.dtype == bool and out.data.dtype != bool:
            out.data = out.data.astype(bool)
        return out

    create_splat_keeping_bools.keeps_bools = True
    builder.create_splat = functools.update_wrapper(create_splat_keeping_bools, splat)


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _refuse_numpy_the_interpreter_cannot_use() -> None:
    """Triton 3.6's interpreter reads a loop bound with ``int(array)``, which NumPy 2.4 refuses
    for its 1-element arrays (later Triton reads the element): every kernel with a runtime loop
    would fail inside the interpreter with NumPy's message. Say what to change instead."""
    from importlib import metadata

    import triton

    try:  # (its version only: the library itself never imports NumPy)
        numpy_version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return
    if _release(triton.__version__) < (3, 7) and _release(numpy_version) >= (2, 4):
        raise ImportError(
            f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) cannot run kernels "
            f"with NumPy {numpy_version}: it converts 1-element arrays to integers, which "
            "NumPy 2.4 refuses. Install 'numpy<2.4', or Triton 3.9 or later"
        )
