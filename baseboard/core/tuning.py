"""Selection by measurement (``BASEBOARD_TUNE``): where several implementations of an op
are accepted and none was chosen explicitly, each is timed on the model's own shapes and
the fastest serves. A weight op is timed per weight shape, and may use a different
implementation for each (``ShapeTunedWeightOp``).

Times are cached on disk, one JSON file per machine environment (device name, driver,
torch and triton versions) under ``$XDG_CACHE_HOME/baseboard/tuning/``, each entry keyed
by op, implementation (name, plugin, ``Impl.version``), shape and dtype; so a second load
times nothing, and a new driver, torch, triton or kernel version is timed afresh.

Ops timed, each at one row and at a step of tokens: rms_norm, fused_add_rms_norm,
silu_and_mul (on [rows, hidden] inputs) and gemm (per [N, K] weight). A weight whose input
is another op's output that a GEMM may fuse (``Impl.fuses``: silu_and_mul before the down
projection, fused_add_rms_norm before q/k/v and gate/up) is timed from that op's input on:
an implementation that fuses it with its fused form, any other with the plan's op before
it, so a fused kernel is compared with the composition it replaces. Attention, sample,
rotary_embedding and the quantized GEMMs keep the order of selection (preference, then
priority): their inputs are not plain shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as host
import statistics
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import torch

from .ops import FUSIONS, OPS
from .registry import Impl

TUNED_OPS = ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "gemm")
REPEATS = 20
GRAPH_REPLAYS = 5


def timed_rows(tokens: int) -> tuple[int, ...]:
    """The input rows an op is timed at: a decode row, and a step of ``tokens``."""
    return tuple(dict.fromkeys((1, tokens)))


def tuning_on(mode: str, device_type: str) -> bool:
    """auto tunes on accelerators only: on the CPU the timing noise of a shared host is
    larger than most differences, and a load should not pay for it by default."""
    return mode == "force" or (mode == "auto" and device_type != "cpu")


@dataclass(frozen=True)
class Workload:
    """The shapes candidates are timed on: a step of ``tokens`` tokens through a model of
    ``hidden_size`` (and MLP ``intermediate_size``) whose dense linear layers prepare
    ``weight_shapes`` ([N, K] each)."""

    hidden_size: int
    intermediate_size: int
    weight_shapes: tuple[tuple[int, int], ...]
    linear_ops: tuple[str, ...] = ("gemm",)  # the weight ops its layers call
    tokens: int = 16
    # the weight shapes whose input is silu_and_mul's output (the down projection)
    gated_shapes: tuple[tuple[int, int], ...] = ()
    # the weight shapes whose input is fused_add_rms_norm's output (q/k/v, gate/up)
    normed_shapes: tuple[tuple[int, int], ...] = ()

    def prologue(self, shape: tuple[int, ...]) -> Optional[str]:
        """The op whose output a weight of ``shape`` multiplies, where a GEMM may fuse it."""
        if shape in self.gated_shapes:
            return "silu_and_mul"
        if shape in self.normed_shapes:
            return "fused_add_rms_norm"
        return None

    @classmethod
    def for_model(cls, config: Any, linear_ops: tuple[str, ...]) -> "Workload":
        """The layer shapes of a Llama-family ``ModelConfig`` (fused qkv and gate_up, as
        models/llama.py prepares them). A model of another layout is still served: a
        weight shape not timed here is timed when its layer is prepared."""
        h, d = config.hidden_size, config.head_dim
        qkv = (config.num_heads + 2 * config.num_kv_heads) * d
        shapes = ((qkv, h), (h, config.num_heads * d), (2 * config.intermediate_size, h),
                  (h, config.intermediate_size), (config.vocab_size, h))
        return cls(h, config.intermediate_size, tuple(dict.fromkeys(shapes)), linear_ops,
                   gated_shapes=((h, config.intermediate_size),),
                   normed_shapes=(shapes[0], shapes[2]))


def environment(device: torch.device, capability: str) -> dict[str, str]:
    """What the cache is keyed by besides the op: the device, its driver and the libraries
    that compile or dispatch kernels."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type} {host.machine()} {host.processor()}".strip()
    driver = ""
    nvidia = Path("/proc/driver/nvidia/version")
    if device.type == "cuda" and nvidia.is_file():
        driver = nvidia.read_text().splitlines()[0]
    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = ""
    return {"device": name, "capability": capability, "driver": driver,
            "runtime": str(torch.version.cuda or torch.version.hip or ""),
            "torch": torch.__version__, "triton": triton}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baseboard" / \
        "tuning"


class TimingCache:
    """Seconds per (op, implementation, shape) for one environment, in one JSON file."""

    def __init__(self, directory: Path, environment: dict[str, str]):
        digest = hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()
        self.path = directory / f"{digest[:32]}.json"
        self.environment = environment
        try:
            self.times: dict[str, float] = json.loads(self.path.read_text())["times"]
        except (OSError, ValueError, KeyError, TypeError):
            self.times = {}  # absent or unreadable: timed afresh and rewritten

    @staticmethod
    def key(op: str, impl: Impl, shape: str, dtype: torch.dtype) -> str:
        return f"{op}|{impl.name}|{impl.plugin}|{impl.version}|{shape}|{dtype}"

    def save(self) -> None:
        """Write beside the final name and rename, so a concurrent load never reads half a
        file; a cache that cannot be written only costs the next load its timing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"environment": self.environment, "times": self.times}, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            pass


def time_call(fn: Callable[[], Any], device: torch.device, graphed: bool) -> float:
    """Median seconds of one ``fn()`` call on ``device``. On CUDA with ``graphed`` (steps
    are replayed from CUDA graphs), ``fn`` is captured in a graph and replayed, as the
    engine runs it."""
    if device.type == "cuda":
        return _time_cuda(fn, graphed)
    fn()  # first call: lazy imports, kernel builds
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _time_cuda(fn: Callable[[], Any], graphed: bool) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (Triton compiles) off the capture
        fn()
    torch.cuda.current_stream().wait_stream(side)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if graphed:
        # REPEATS calls back to back in one graph, as a step's kernels run: one replay per
        # call would time the graph launch (several us), not a kernel of a few us
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(REPEATS):
                fn()
        graph.replay()
        start.record()
        for _ in range(GRAPH_REPLAYS):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / (REPEATS * GRAPH_REPLAYS)
    start.record()
    for _ in range(REPEATS):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / REPEATS


class TunedState(NamedTuple):
    apply: Callable[..., torch.Tensor]
    state: Any
    name: str  # the implementation that prepared it
    # replaced op -> the winner's fused method for it, or the plan's op and then apply
    fused: dict[str, Callable[..., Any]]


class ShapeTunedWeightOp:
    """A weight op whose ``prepare`` picks, per weight shape, the candidate measured
    fastest, and whose ``apply`` delegates to it. Bound where the winners differ between
    the model's weight shapes."""

    def __init__(self, tuner: "Tuner", candidates: dict[str, tuple[Impl, Any]]):
        self.tuner, self.candidates = tuner, candidates
        self.composed = dict(tuner.composed)  # the plan's fusable ops, as when chosen

    def prepare(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> TunedState:
        """weight [N, K], bias [N] | None -> the winner's state, with its apply."""
        self.tuner.composed = self.composed
        times = self.tuner.gemm_times(self.candidates, tuple(weight.shape))
        name = min(times, key=times.get)
        impl, loaded = self.candidates[name]
        shape = tuple(weight.shape)
        return TunedState(loaded.apply, loaded.prepare(weight, bias), name,
                          {op: self.tuner.fused_apply(impl, loaded, op,
                                                      self.tuner.fused_form(impl, op, shape))
                           for op in FUSIONS if FUSIONS[op].op == "gemm"})

    @staticmethod
    def apply(state: TunedState, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, K] -> [T, N] through the implementation that prepared ``state``."""
        return state.apply(state.state, x, out_dtype)

    @staticmethod
    def apply_silu_and_mul(state: TunedState, x: torch.Tensor,
                           out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, 2I] -> [T, N] = apply(state, silu_and_mul(x)), fused where the
        implementation that prepared ``state`` fuses it."""
        return state.fused["silu_and_mul"](state.state, x, out_dtype)

    @staticmethod
    def apply_add_rms_norm(state: TunedState, x: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor, eps: float,
                           out_dtype: Optional[torch.dtype] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(apply(state, rms_norm(x + residual)), x + residual), fused where the
        implementation that prepared ``state`` fuses it."""
        return state.fused["fused_add_rms_norm"](state.state, x, residual, weight, eps,
                                                 out_dtype)


@dataclass
class Outcome:
    """What tuning decided for one op: the object to bind, the name a plan records, why,
    and the times (implementation -> shape -> seconds)."""

    bound: Any
    selected: Impl
    why: str
    measured: dict[str, dict[str, float]]
    # the implementations whose fused forms the bound object may run (Impl.fuses): every
    # candidate where each weight shape runs its own winner; else only the one selected
    offering: tuple[Impl, ...] = ()


def make_tuner(platform: Any, workload: Workload, dtype: torch.dtype, graphed: bool,
               cache_dir: Optional[Path] = None) -> "Tuner":
    """A tuner on ``platform``'s device, caching under ``cache_dir`` (default: the user's
    cache directory)."""
    device = platform.device()
    cache = TimingCache(cache_dir or default_cache_dir(),
                        environment(device, platform.capability()))
    return Tuner(cache, workload, device, dtype, graphed)


class Tuner:
    """Times candidates on a workload, through a TimingCache; ``ops`` are the ops it times
    (those of TUNED_OPS that the workload's model calls)."""

    def __init__(self, cache: TimingCache, workload: Workload, device: torch.device,
                 dtype: torch.dtype, graphed: bool):
        self.cache, self.workload, self.device = cache, workload, device
        self.dtype, self.graphed = dtype, graphed
        self.ops = tuple(op for op in TUNED_OPS
                         if OPS[op].kind != "weight" or op in workload.linear_ops)
        # replaced op -> (its selected name, its bound function), for the fusions of the op
        # being chosen (select_plan passes them to ``choose``)
        self.composed: dict[str, tuple[str, Callable]] = {}
        # (implementation, weight shape) -> whether its fused form measured slower there
        # than the replaced op and its apply, apart
        self.apart: dict[tuple[str, tuple[int, ...]], bool] = {}

    def fuses(self, impl: Impl, replaced: str) -> bool:
        """Whether ``impl`` would run ``replaced`` fused (selection.fusion_state's rule)."""
        known = self.composed.get(replaced)
        return known is not None and replaced in impl.fuses and known[0] == impl.name

    def fused_form(self, impl: Impl, replaced: str, shape: tuple[int, ...]) -> bool:
        """Whether a weight of ``shape`` runs ``impl``'s fused form for ``replaced``: where
        it has one, unless the two ops apart were measured faster on this shape."""
        return self.fuses(impl, replaced) and not self.apart.get((impl.name, shape), False)

    def fused_apply(self, impl: Impl, loaded: Any, replaced: str,
                    fused: bool) -> Optional[Callable]:
        """The fused method of ``impl`` for ``replaced`` (FUSIONS) where ``fused``, else the
        plan's ``replaced`` and then its apply; None where the plan's ``replaced`` is not
        known (BASEBOARD_FUSE=0: no layer asks for the fused method then)."""
        if fused:
            return getattr(loaded, FUSIONS[replaced].method)
        if replaced not in self.composed:
            return None
        op = self.composed[replaced][1]
        if replaced == "silu_and_mul":
            return lambda state, x, out_dtype=None: loaded.apply(state, op(x), out_dtype)

        def normed_apply(state, x, residual, weight, eps, out_dtype=None):
            normed, summed = op(x, residual, weight, eps)
            return loaded.apply(state, normed, out_dtype), summed
        return normed_apply

    def _time(self, op: str, impl: Impl, shape: str, make_call: Callable[[], Callable]) -> float:
        key = TimingCache.key(op, impl, shape, self.dtype)
        if key not in self.cache.times:
            self.cache.times[key] = time_call(make_call(), self.device, self.graphed)
            self.cache.save()
        return self.cache.times[key]

    def _tensor(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device).to(self.dtype)

    def function_shape(self, op: str, rows: int) -> str:
        """The input shape a function op is timed on, as text: rows x features."""
        w = self.workload
        return f"{rows}x{2 * w.intermediate_size if op == 'silu_and_mul' else w.hidden_size}"

    def function_times(self, op: str, candidates: dict[str, tuple[Impl, Any]]) -> dict[str, float]:
        """Seconds per candidate for one decode row plus one step of ``tokens`` rows: a
        one-kernel implementation and a chain of small torch kernels rank differently on
        the two, and a decode step of one sequence is one row."""
        w = self.workload
        h = w.hidden_size

        def inputs(t: int) -> tuple:
            if op == "silu_and_mul":
                return (self._tensor(t, 2 * w.intermediate_size),)
            if op == "rms_norm":
                return self._tensor(t, h), self._tensor(h), 1e-6
            return self._tensor(t, h), self._tensor(t, h), self._tensor(h), 1e-6

        def make_call(fn: Callable, rows: int) -> Callable[[], Callable]:
            def build() -> Callable:
                args = inputs(rows)
                return lambda: fn(*args)
            return build

        return {name: sum(self._time(op, impl, self.function_shape(op, rows),
                                     make_call(fn, rows)) for rows in timed_rows(w.tokens))
                for name, (impl, fn) in candidates.items()}

    def gemm_times(self, candidates: dict[str, tuple[Impl, Any]],
                   weight_shape: tuple[int, ...]) -> dict[str, float]:
        """Seconds per candidate for one decode row plus one step of ``tokens`` rows
        through an [N, K] weight: implementations often differ at one row only (a GEMV
        against cuBLAS), and a winner must not lose the other case either."""
        n, k = weight_shape
        prologue = self.workload.prologue((n, k))
        if prologue not in self.composed:
            prologue = None

        def make_call(impl: Impl, loaded: Any, rows: int,
                      fused: bool) -> Callable[[], Callable]:
            def build() -> Callable:
                state = loaded.prepare(self._tensor(n, k), None)
                if prologue is None:
                    x = self._tensor(rows, k)
                    return lambda: loaded.apply(state, x)
                # from the replaced op's input on
                apply = self.fused_apply(impl, loaded, prologue, fused)
                if prologue == "silu_and_mul":
                    x = self._tensor(rows, 2 * k)
                    return lambda: apply(state, x)
                x, residual, weight = self._tensor(rows, k), self._tensor(rows, k), \
                    self._tensor(k)
                return lambda: apply(state, x, residual, weight, 1e-6)
            return build

        def shape(rows: int, fused: bool) -> str:
            if prologue is None:
                return f"{rows}x{k}x{n}"
            how = "fused" if fused else self.composed[prologue][0]
            return f"{rows}x{k}x{n}+{prologue}={how}"

        def seconds(impl: Impl, loaded: Any, fused: bool) -> float:
            return sum(self._time("gemm", impl, shape(rows, fused),
                                  make_call(impl, loaded, rows, fused))
                       for rows in timed_rows(self.workload.tokens))

        times = {}
        for name, (impl, loaded) in candidates.items():
            times[name] = seconds(impl, loaded, False)
            if prologue is not None and self.fuses(impl, prologue):
                # a fused form is not faster everywhere: the two apart are timed too
                fused = seconds(impl, loaded, True)
                self.apart[(name, (n, k))] = times[name] < fused
                times[name] = min(times[name], fused)
        return times

    def choose(self, op: str, candidates: dict[str, tuple[Impl, Any]],
               composed: Optional[dict[str, tuple[str, Callable]]] = None) -> Outcome:
        """The fastest of ``candidates`` (name -> (Impl, loaded object), at least two).
        ``composed``: for the fusions of ``op``, the replaced op's selected name and bound
        function (a fused form is timed against that op followed by ``op``)."""
        self.composed = dict(composed or {})
        if op != "gemm":
            times = self.function_times(op, candidates)
            name = min(times, key=times.get)
            shape = "+".join(self.function_shape(op, rows) for rows in
                             timed_rows(self.workload.tokens))
            return Outcome(candidates[name][1], candidates[name][0],
                           f"measured fastest ({_times_text(times)})",
                           {n: {shape: s} for n, s in times.items()})
        measured: dict[str, dict[str, float]] = {name: {} for name in candidates}
        winners: dict[str, str] = {}
        total = dict.fromkeys(candidates, 0.0)
        for n, k in self.workload.weight_shapes:
            times = self.gemm_times(candidates, (n, k))
            winners[f"{n}x{k}"] = min(times, key=times.get)
            for name, seconds in times.items():
                measured[name][f"{n}x{k}"] = seconds
                total[name] += seconds
        overall = min(total, key=total.get)
        apart = [shape for shape, name in winners.items()
                 if self.apart.get((name, tuple(map(int, shape.split("x")))), False)]
        apart_text = f"; fused form slower than apart on {', '.join(apart)}" if apart else ""
        if len(set(winners.values())) <= 1 and not apart:
            return Outcome(candidates[overall][1], candidates[overall][0],
                           f"measured fastest over the model's weight shapes "
                           f"({_times_text(total)})", measured)
        per_shape = ", ".join(f"{shape}: {name}" for shape, name in winners.items())
        return Outcome(ShapeTunedWeightOp(self, candidates), candidates[overall][0],
                       f"measured per weight shape ({per_shape}); {overall} fastest over all "
                       f"({_times_text(total)}){apart_text}", measured,
                       tuple(impl for impl, _ in candidates.values()))


def _times_text(times: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds * 1e6:.1f} us"
                     for name, seconds in sorted(times.items(), key=lambda kv: kv[1]))
