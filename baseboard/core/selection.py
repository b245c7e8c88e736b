"""Selection: a pure function of (registry, platform, context, explicit choices) that
returns a plan (op -> bound implementation) and the trace of every candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch

from .errors import ConfigError, RegistrationError, SelectionError, did_you_mean
from .ops import FUSIONS, OPS, check_signature
from .platform import Platform
from .registry import ENVIRONMENT, Impl, Registry, Rejection, unmet_requirements


@dataclass(frozen=True)
class SelectionContext:
    """What implementations are chosen for. ``supports(ctx)`` reads these fields."""

    platform: Platform
    dtype: torch.dtype = torch.float32
    head_dim: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None
    block_size: Optional[int] = None
    cuda_graphs: bool = False
    # the quantized layouts the model's layers use (core.quant.QuantScheme), for the GEMM
    # ops' supports(); empty for an unquantized model
    quant_schemes: tuple = ()
    # ranks the model is split over; the collectives' supports() need a backend when > 1
    tensor_parallel_size: int = 1
    # whether implementations' fused forms (Impl.fuses) may run (BASEBOARD_FUSE)
    fuse: bool = True

    def schemes_for(self, op: str) -> tuple:
        """The quantized layouts this model hands to ``op``."""
        return tuple(s for s in self.quant_schemes if s.op == op)


@dataclass(frozen=True)
class Choice:
    name: str
    source: str  # "argument", "--backend", "BASEBOARD_BACKEND", "plan file ...", ...


@dataclass
class Candidate:
    """One implementation considered for an op. ``kind`` says why a rejected one was
    rejected (``registry.UNSUPPORTED`` or ``registry.ENVIRONMENT``); "" when accepted."""

    name: str
    plugin: str
    priority: int
    accepted: bool
    reason: str
    kind: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OpDecision:
    """The choice for one op: candidates in rank order, ``preferred`` the platform's
    preference list for the op."""

    op: str
    selected: str
    plugin: str
    why: str
    candidates: list[Candidate] = field(default_factory=list)
    preferred: tuple[str, ...] = ()
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # name->shape->s
    # the fusions the selected implementation offers: replaced op -> "fused", or why the
    # layers run the two ops apart
    fusions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"selected": self.selected, "plugin": self.plugin, "why": self.why,
                "preferred": list(self.preferred),
                "candidates": [c.as_dict() for c in self.candidates],
                "measured": self.measured, "fusions": self.fusions}


class Plan:
    """op -> bound implementation. ``plan.rms_norm`` is the selected function itself
    (an instance attribute, so calling through the plan costs one dict lookup)."""

    def __init__(self, platform: str, decisions: dict[str, OpDecision], bound: dict[str, Any]):
        self.platform = platform
        self.decisions = decisions
        self.__dict__.update(bound)

    def impl(self, op: str) -> Any:
        return self.__dict__[op]

    def fused(self, replaced: str) -> bool:
        """Whether the layers run ``replaced`` (an ops.FUSIONS key) inside the implementation
        of the op that fuses it (its ``FUSIONS[replaced].method``); else they compose the two."""
        spec = FUSIONS[replaced]
        return self.decisions[spec.op].fusions.get(replaced) == FUSED

    def selected(self) -> dict[str, str]:
        return {op: d.selected for op, d in self.decisions.items()}

    def to_json(self) -> dict:
        """The plan as data; `BASEBOARD_PLAN` / `--plan` replay its ``selected`` names."""
        return {"platform": self.platform, "selected": self.selected(),
                "ops": {op: d.as_dict() for op, d in self.decisions.items()}}


def parse_backend_spec(text: str, source: str) -> dict[str, str]:
    """Parse 'op=name,op=name'. Malformed text or an unknown op name is a ConfigError."""
    choices: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        op, sep, name = (s.strip() for s in part.partition("="))
        if not sep or not op or not name:
            raise ConfigError(f"{source}: {part!r} in {text!r} is not of the form op=name "
                              f"(for example 'gemm=torch,attention=triton').")
        if op not in OPS:
            raise ConfigError(f"{source}: unknown op {op!r}.{did_you_mean(op, OPS)} "
                              f"Known ops: {', '.join(OPS)}.")
        if op in choices and choices[op] != name:
            raise ConfigError(f"{source}: op {op!r} is given twice ({choices[op]!r} and {name!r}).")
        choices[op] = name
    return choices


def rejection(impl: Impl, ctx: SelectionContext) -> Rejection | None:
    """Why ``impl`` cannot serve ``ctx`` (None: it can). What the case or mode rules out is
    checked before what the machine lacks, so that an implementation this case would never
    use is not reported as a broken environment."""
    if not impl.runs_on(ctx.platform.name):
        return Rejection(f"runs on {', '.join(impl.platforms)}, not on {ctx.platform.name}")
    if ctx.cuda_graphs and not impl.cuda_graph_safe:
        return Rejection("not cuda_graph_safe, and CUDA graphs are on "
                         "(BASEBOARD_CUDA_GRAPHS=0 allows it)")
    unmet = unmet_requirements(impl.requires)
    if unmet:
        return Rejection(unmet, ENVIRONMENT)
    if impl.supports is None:
        return None
    try:
        verdict = impl.supports(ctx)
    except Exception as exc:  # a broken supports() must not hide the other candidates
        return Rejection(f"supports() raised {exc!r}", ENVIRONMENT)
    if verdict is None or isinstance(verdict, Rejection):
        return verdict
    return Rejection(str(verdict))


def _one_per_name(impls: list[Impl], platform: str) -> list[Impl]:
    """Where several plugins register one name, the record for this platform (else the first)."""
    chosen: dict[str, Impl] = {}
    for impl in impls:
        if impl.name not in chosen or (impl.runs_on(platform)
                                       and not chosen[impl.name].runs_on(platform)):
            chosen[impl.name] = impl
    return list(chosen.values())


def _order(impls: list[Impl], preferences: tuple[str, ...]) -> list[Impl]:
    rank = {name: i for i, name in enumerate(preferences)}
    return sorted(impls, key=lambda i: (rank.get(i.name, len(rank)), -i.priority, i.name))


def _candidates_text(candidates: list[Candidate]) -> str:
    return "; ".join(f"{c.name} ({c.plugin}): {'ok' if c.accepted else c.reason}"
                     for c in candidates)


def decide(registry: Registry, ctx: SelectionContext, op: str,
           choice: Choice | None) -> tuple[Impl, OpDecision]:
    """Choose one implementation of ``op``; raise SelectionError if none is acceptable."""
    impls = _one_per_name(registry.for_op(op), ctx.platform.name)
    preferences = ctx.platform.preferences.get(op, ())
    ordered = _order(impls, preferences)
    candidates = []
    for impl in ordered:
        rejected = rejection(impl, ctx)
        candidates.append(Candidate(impl.name, impl.plugin, impl.priority, rejected is None,
                                    rejected.reason if rejected else "",
                                    rejected.kind if rejected else ""))
    by_name = {impl.name: impl for impl in ordered}
    accepted = [c for c in candidates if c.accepted]
    if choice is not None:
        if choice.name not in by_name:
            raise SelectionError(
                f"{choice.source} asks for {op}={choice.name!r}, which no loaded plugin "
                f"registers.{did_you_mean(choice.name, by_name)} Known {op} implementations: "
                f"{', '.join(sorted(by_name))}. A plugin that failed to load or is disabled "
                f"registers nothing (see `baseboard info`).")
        chosen = next(c for c in candidates if c.name == choice.name)
        if not chosen.accepted:
            raise SelectionError(
                f"{choice.source} asks for {op}={choice.name!r}, which cannot run here: "
                f"{chosen.reason}. Candidates: {_candidates_text(candidates)}.")
        why = f"explicit choice ({choice.source})"
    elif not accepted:
        raise SelectionError(f"no implementation of {op!r} can run on platform "
                             f"{ctx.platform.name!r}: {_candidates_text(candidates)}.")
    else:
        chosen = accepted[0]
        why = (f"preferred by platform {ctx.platform.name}" if chosen.name in preferences
               else f"highest priority ({chosen.priority}) among accepted candidates")
    impl = by_name[chosen.name]
    return impl, OpDecision(op, impl.name, impl.plugin, why, candidates, tuple(preferences))


FUSED = "fused"


def fusion_state(impl: Impl, replaced: str, selected: str, ctx: SelectionContext) -> str:
    """FUSED when ``impl`` (selected for its op) runs ``replaced`` fused, given the name
    ``selected`` for ``replaced``; else why not. The fused form is that implementation's own
    kernel for ``replaced``, so it serves only where the plan picked the same name for it:
    choosing another implementation of ``replaced`` declines the fusion."""
    if not ctx.fuse:
        return "not fused: BASEBOARD_FUSE=0"
    if selected != impl.name:
        return f"not fused: {replaced} runs {selected!r}, not {impl.name!r}"
    return FUSED


def bind(impl: Impl, reference: Impl) -> Any:
    """Import an implementation and check it against its op's reference."""
    spec = OPS[impl.op]
    where = f"{impl.op}={impl.name} (plugin {impl.plugin!r}, {impl.loader})"
    try:
        loaded = impl.load()
    except Exception as exc:
        raise RegistrationError(f"{where} could not be imported: {exc!r}") from exc
    if impl is not reference:
        check_signature(spec, loaded, reference.load(), where, impl.fuses)
    return loaded


def select_plan(registry: Registry, ctx: SelectionContext,
                choices: dict[str, Choice], tuner: Optional[Any] = None) -> Plan:
    """Resolve every op of the contract into a plan. With a ``tuner``
    (``core.tuning.Tuner``), an op without an explicit choice and with several accepted
    candidates that the tuner times gets the one measured fastest."""
    decisions, bound, offering = {}, {}, {}
    for op in OPS:
        impl, decision = decide(registry, ctx, op, choices.get(op))
        decisions[op] = decision
        reference = registry.reference(op)
        accepted = [c.name for c in decision.candidates if c.accepted]
        if tuner is not None and op not in choices and len(accepted) > 1 \
                and op in tuner.ops:
            impls = {i.name: i for i in _one_per_name(registry.for_op(op), ctx.platform.name)}
            # a fused form is timed against the composition the layers would run instead
            composed = {r: (decisions[r].selected, bound[r]) for r, spec in FUSIONS.items()
                        if spec.op == op and r in bound and ctx.fuse}
            outcome = tuner.choose(op, {n: (impls[n], bind(impls[n], reference))
                                        for n in accepted}, composed)
            decision.selected, decision.plugin = outcome.selected.name, outcome.selected.plugin
            decision.why, decision.measured = outcome.why, outcome.measured
            bound[op], offering[op] = outcome.bound, outcome.offering or (outcome.selected,)
            continue
        bound[op], offering[op] = bind(impl, reference), (impl,)
    for replaced, spec in FUSIONS.items():
        # where each weight shape runs its own winner, a fusion is used if any may run it
        states = [fusion_state(impl, replaced, decisions[replaced].selected, ctx)
                  for impl in offering[spec.op] if replaced in impl.fuses]
        if states:
            decisions[spec.op].fusions[replaced] = FUSED if FUSED in states else states[0]
    return Plan(ctx.platform.name, decisions, bound)


def plan_warnings(plugin_report: Iterable[Any], plan: Plan) -> list[str]:
    """What a user should be told before running ``plan``: one line per plugin that failed
    to load (or was refused), and one per implementation the platform prefers that was
    rejected for an ENVIRONMENT reason ahead of the one selected (a library that did not
    build or import, a distribution not installed), so nothing runs slower unexplained.
    Implementations rejected as UNSUPPORTED for the case (shape, dtype, mode) are not
    reported: nothing is wrong.

    ``plugin_report``: the catalog's load report (``catalog.plugins.report``, records with
    name, status, distribution, version, error).
    """
    lines = [f"plugin {r.name} ({r.distribution} {r.version}) {r.status}: {r.error}"
             for r in plugin_report if r.status in ("failed", "refused")]
    for op, decision in plan.decisions.items():
        rank = {name: i for i, name in enumerate(decision.preferred)}
        selected_rank = rank.get(decision.selected, len(rank))
        for c in decision.candidates:
            if c.kind == ENVIRONMENT and rank.get(c.name, selected_rank) < selected_rank:
                lines.append(f"{op}: {c.name} ({c.plugin}), preferred by platform "
                             f"{plan.platform}, cannot run: {c.reason}; {decision.selected} "
                             f"({decision.plugin}) runs instead")
    return lines
