"""Declarative search spaces: ``spaces/*.yaml`` -> validated :class:`SearchSpace` -> trial configs.

A space file (every key is checked; unknown keys fail with a did-you-mean)::

    name: my_space                 # optional; defaults to the file name
    description: free text         # optional
    base:                          # fixed TrialConfig fields (nested, as in a trial config)
      model: {source: smollm2-135m}
    search:                        # dotted TrialConfig paths, sampled in this order
      attention.layout: {choice: [linear, sliding, terrace]}
      attention.window: {choice: [16, 64], when: "attention.layout != 'linear'"}
      finetune.lora.rank: {int: [4, 64], log: true}                 # inclusive bounds; optional step
      distill.lr: {loguniform: [1.0e-3, 1.0e-1]}                     # = {float: [lo, hi], log: true}
      distill.mse_factor: {float: [100, 1000], step: 100}
      distill.layer_weights.kind: {choice: [uniform, power]}
      distill.layer_weights.params.p: {float: [0.5, 2], when: "distill.layer_weights.kind == 'power'"}
      attention.softmax_layers: {choice: [[], [0], [0, 1]]}          # choices may be lists or mappings
    extra_grids:                   # grid sampler only: more search blocks, each over `base` alone
      - name: window_series        # optional label
        search: {attention.layout: {choice: [sliding]}, attention.window: {choice: [4, 16, 64, 256]}}
    constraints:                   # a point violating one is never run
      - "attention.window <= data.seq_len"
    objectives: [{metric: ppl_ratio_ft, mode: min}, {metric: state_bytes_32k, mode: min}]
    sampler: {kind: tpe, seed: 0, num_trials: 32}   # grid | random | tpe | nsga2 (grid: no num_trials)
    resources: {cpu: 1, gpu: 0.25} # per trial; gpu < 1 shares a GPU (memory capped to that fraction)
    scheduler: {kind: asha, metric: eval_loss, mode: min, max_t: 100, grace_period: 1}  # one objective only
    budget: {time_s: 3600, max_concurrent: 4, retries: 1}
    replicates: 3                  # grid only: each point run with seeds seed, seed + 1, seed + 2 (one design_id)

A parameter is exactly one of ``choice`` / ``int`` / ``float`` / ``loguniform`` plus optional ``step``,
``log`` and ``when``. ``when`` and ``constraints`` use the expression language of :mod:`lolsearch.search.expr`
(dotted names, literals, comparisons, ``in``, ``and/or/not``, arithmetic). A ``when`` is evaluated on
base + the values sampled so far (YAML order), so it may only read keys searched above it; names not set
anywhere read the TrialConfig default. Conditionally absent parameters keep their base/default value.
The grid sampler enumerates the conditional tree of every block exactly, drops points violating a
constraint, and removes duplicates by ``trial_id`` (the main block first, then ``extra_grids`` in order).
Samplers record a violating point as a ``pruned`` trial with the reason.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lolsearch.config import TrialConfig, load_yaml, parse_trial_config
from lolsearch.core.errors import ConfigError, Problem
from lolsearch.search.expr import Expr, ExprError, parse_expr
from lolsearch.search.points import Block, GridInfo, Param, Point, PointRef, label_of, seed_replicates
from lolsearch.search.schema import (
    GRID_CAP,
    ParamSpec,
    SpaceFile,
    check_config_tree,
    check_path,
    lookup_path,
    set_path,
    space_problems,
)

log = logging.getLogger(__name__)


class SearchSpace:
    """A validated space file. Build with :func:`load_space`."""

    def __init__(self, spec: SpaceFile, file: str, text: str) -> None:
        self.spec, self.file, self.text = spec, file, text
        self.name = spec.name or Path(file).stem
        self.base = copy.deepcopy(spec.base)
        self.objectives = list(spec.objectives)
        self.sampler, self.resources, self.scheduler, self.budget = spec.sampler, spec.resources, spec.scheduler, spec.budget
        self.blocks: list[Block] = []
        self.constraints: list[tuple[str, Expr]] = []
        self._grid: tuple[list[Point], GridInfo] | None = None
        problems = self._compile()
        if problems:
            raise ConfigError(problems)

    def _compile(self) -> list[Problem]:
        problems = [Problem(self.file, f"base.{k}", m) for k, m in check_config_tree(self.base)]
        blocks = [("main", "search", self.spec.search)]
        blocks += [(g.name or f"grid{i + 1}", f"extra_grids.{i}.search", g.search) for i, g in enumerate(self.spec.extra_grids)]
        for name, prefix, search in blocks:
            params: list[Param] = []
            for key, pspec in search.items():
                problems += self._compile_param(key, pspec, prefix, params)
            self.blocks.append(Block(name, prefix, params))
        for i, src in enumerate(self.spec.constraints):
            try:
                expr = parse_expr(src)
            except ExprError as err:
                problems.append(Problem(self.file, f"constraints.{i}", str(err)))
                continue
            problems += [Problem(self.file, f"constraints.{i}", m) for m in (check_path(n, expr=src) for n in expr.names) if m]
            self.constraints.append((f"constraints.{i}", expr))
        return problems + self._check_sampler()

    def _compile_param(self, key: str, pspec: ParamSpec, prefix: str, params: list[Param]) -> list[Problem]:
        yaml_key = f"{prefix}.{key}"
        msg = check_path(key)
        if msg:
            return [Problem(self.file, yaml_key, msg)]
        for p in params:
            if _overlap(p.key, key):
                return [Problem(self.file, yaml_key, f"overlaps '{p.key}': search either the whole value or its parts")]
        when = None
        if pspec.when is not None:
            try:
                when = parse_expr(pspec.when)
            except ExprError as err:
                return [Problem(self.file, f"{yaml_key}.when", str(err))]
            for n in when.names:
                msg = check_path(n, expr=pspec.when)
                if msg:
                    return [Problem(self.file, f"{yaml_key}.when", msg)]
                if _overlap(n, key):
                    return [Problem(self.file, f"{yaml_key}.when", f"a condition cannot read its own key '{n}'")]
        try:
            params.append(Param(key, pspec, yaml_key, when))
        except TypeError as err:
            return [Problem(self.file, yaml_key, f"choices cannot be stored: {err}")]
        if pspec.kind == "choice" and len(set(map(str, params[-1].labels))) != len(pspec.choice):
            params.pop()
            return [Problem(self.file, yaml_key, "duplicate choices")]
        return []

    def _check_later_refs(self) -> list[Problem]:
        out = []
        for b in self.blocks:
            for i, p in enumerate(b.params):
                for n in p.when.names if p.when else ():
                    later = [q.key for q in b.params[i + 1:] if _overlap(n, q.key)]
                    if later:
                        out.append(Problem(self.file, f"{p.yaml_key}.when", f"reads '{n}', which is searched later "
                                           f"({b.prefix}.{later[0]}); move that key above this one"))
        return out

    def _check_sampler(self) -> list[Problem]:
        out = self._check_later_refs()
        s, f = self.spec.sampler, self.file
        if s.kind == "grid":
            if s.num_trials is not None:
                out.append(Problem(f, "sampler.num_trials", "a grid runs every point; remove num_trials (use --max-trials for a smoke run)"))
            out += [Problem(f, p.yaml_key, "the grid sampler needs finite values: use choice, int, or float with step")
                    if not p.finite else Problem(f, p.yaml_key, f"takes {p.grid_size():.3g} values; a grid holds at most "
                                                 f"{GRID_CAP} points") for b in self.blocks for p in b.params
                    if not p.finite or p.grid_size() > GRID_CAP]
        else:
            if s.num_trials is None:
                out.append(Problem(f, "sampler.num_trials", f"required for sampler '{s.kind}'"))
            if self.spec.replicates > 1:
                out.append(Problem(f, "replicates", f"only the grid sampler repeats its points (sampler is '{s.kind}'); "
                                   "use sampler kind grid, or search seed as a choice"))
            if self.spec.extra_grids:
                out.append(Problem(f, "extra_grids", f"only the grid sampler takes extra_grids (sampler is '{s.kind}')"))
        if self.spec.scheduler is not None and len(self.objectives) > 1:
            out.append(Problem(f, "scheduler", "ASHA early-stops trials, which would corrupt the Pareto front of a "
                               f"{len(self.objectives)}-objective sweep; remove the scheduler or keep one objective"))
        return out

    def _lookup(self, raw: dict[str, Any]) -> Any:
        return lambda name: lookup_path(raw, name)

    def _active(self, p: Param, raw: dict[str, Any]) -> bool:
        if p.when is None:
            return True
        try:
            return p.when.truth(self._lookup(raw))
        except ExprError as err:
            raise ConfigError.single(self.file, f"{p.yaml_key}.when", str(err)) from None

    def violation(self, raw: dict[str, Any]) -> str | None:
        """The reason ``raw`` violates a constraint, or None."""
        for key, expr in self.constraints:
            try:
                ok = expr.truth(self._lookup(raw))
            except ExprError as err:
                raise ConfigError.single(self.file, key, str(err)) from None
            if not ok:
                values = ", ".join(f"{n}={lookup_path(raw, n)!r}" for n in expr.names)
                return f"violates constraint '{expr.source}' ({values})"
        return None

    def build(self, block: Block, choose: Any) -> Point:
        """Samples ``block`` in YAML order with ``choose(param) -> value``; checks constraints (no parsing)."""
        raw = copy.deepcopy(self.base)
        params: dict[str, Any] = {}
        for p in block.params:
            if self._active(p, raw):
                params[p.key] = choose(p)
                set_path(raw, p.key, copy.deepcopy(params[p.key]))
        return Point(block.name, params, raw, pruned=self.violation(raw))

    def to_config(self, point: Point) -> TrialConfig:
        """Validates a point into a TrialConfig; problems are attributed to the space file and key."""
        try:
            return parse_trial_config(point.raw, self.file)
        except ConfigError as err:
            raise ConfigError([self.attribute(pr, point) for pr in err.problems]) from None

    def attribute(self, pr: Problem, point: Point) -> Problem:
        """A problem of ``point``'s config (its key a dotted config key) as a problem of this space file."""
        where = ", ".join(f"{k}={v!r}" for k, v in point.params.items())
        msg = f"{pr.message} (at {where})" if where else pr.message
        active = [p for b in self.blocks if b.name == point.block for p in b.params if p.key in point.params]
        for p in active:  # the failing key is a searched one (or inside one)
            if pr.key == p.key or pr.key.startswith(p.key + "."):
                return Problem(self.file, p.yaml_key, msg)
        for p in active:  # a check across keys (a model validator) that involves a searched key
            if not pr.key or p.key.startswith(pr.key + "."):
                return Problem(self.file, p.yaml_key, f"{pr.key}: {msg}" if pr.key else msg)
        return Problem(self.file, f"base.{pr.key}" if pr.key else "base", msg)

    @property
    def is_grid(self) -> bool:
        return self.sampler.kind == "grid"

    @property
    def searched_keys(self) -> list[str]:
        """Dotted keys searched by any block, in first-seen order."""
        return list(dict.fromkeys(p.key for b in self.blocks for p in b.params))

    def grid(self) -> tuple[list[Point], GridInfo]:
        """Every distinct valid grid point (validated) and the size bookkeeping. Grid spaces only."""
        if not self.is_grid:
            raise ValueError("grid() needs sampler kind 'grid'")
        if self._grid is None:
            self._grid = self._enumerate_all()
        return self._grid

    def _enumerate_all(self) -> tuple[list[Point], GridInfo]:
        seen: set[str] = set()
        points, tree, excluded, per_block = [], 0, 0, {}
        for block in self.blocks:
            for pt in self._enumerate(block):
                tree += 1
                if pt.pruned:
                    excluded += 1
                    continue
                pt.config = self.to_config(pt)
                if pt.config.trial_id in seen:
                    continue
                seen.add(pt.config.trial_id)
                points.append(pt)
                per_block[block.name] = per_block.get(block.name, 0) + self.spec.replicates
        designs = len(points)
        # seed-major: every design's first seed, then every design's second...; a sweep cut short by its time
        # budget then holds whole rounds of seeds rather than some designs with all seeds and others with none
        copies = [seed_replicates(pt, self.spec.replicates) for pt in points]
        points = [reps[r] for r in range(self.spec.replicates) for reps in copies]
        for q in points:
            q.config = q.config or self.to_config(q)
        info = GridInfo(tree, excluded, tree - excluded - designs, len(points), per_block)
        return points, info

    def _enumerate(self, block: Block) -> list[Point]:
        out: list[Point] = []

        def rec(i: int, raw: dict[str, Any], params: dict[str, Any]) -> None:
            if len(out) > GRID_CAP:
                raise ConfigError.single(self.file, block.prefix, f"the grid has more than {GRID_CAP} points")
            if i == len(block.params):
                out.append(Point(block.name, dict(params), raw, pruned=self.violation(raw)))
                return
            p = block.params[i]
            if not self._active(p, raw):
                rec(i + 1, raw, params)
                return
            for v in p.grid_values():
                nxt = copy.deepcopy(raw)
                set_path(nxt, p.key, copy.deepcopy(v))
                rec(i + 1, nxt, {**params, p.key: v})

        rec(0, copy.deepcopy(self.base), {})
        return out

    def sample_points(self, n: int, seed: int = 0) -> list[Point]:
        """``n`` validated points: a grid cycles through its points in seeded random order; other samplers
        draw each parameter independently at random, skipping constraint-violating points."""
        rng = random.Random(seed)
        if self.is_grid:
            points = list(self.grid()[0])
            if not points:
                raise ConfigError.single(self.file, "constraints", "the constraints exclude every grid point")
            rng.shuffle(points)
            return [points[i % len(points)] for i in range(n)]
        out, attempts = [], 0
        while len(out) < n:
            attempts += 1
            if attempts > 100 * max(n, 1):
                raise ConfigError.single(self.file, "constraints", f"only {len(out)} of {attempts - 1} random points satisfy the constraints")
            pt = self.build(self.blocks[0], lambda p: p.draw(rng))
            if pt.pruned is None:
                pt.config = self.to_config(pt)
                out.append(pt)
        return out

    def sample(self, n: int, seed: int = 0) -> list[TrialConfig]:
        """``n`` validated TrialConfigs (``lolsearch validate --samples n``)."""
        return [p.config for p in self.sample_points(n, seed)]

    def plan_points(self, max_trials: int | None = None) -> list[Point]:
        """The points a sweep would run, in order: the exact grid, or the sampler's first ``num_trials``
        suggestions from a fresh seeded study (exact for random; for tpe/nsga2 only the startup points
        match, later ones depend on results). Pruned points are included, with their reason."""
        if self.is_grid:
            points = self.grid()[0]
            return points[:max_trials] if max_trials is not None else list(points)
        import optuna

        n = self.sampler.num_trials if max_trials is None else min(max_trials, self.sampler.num_trials)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions = ["minimize" if o.mode == "min" else "maximize" for o in self.objectives]
        study = optuna.create_study(sampler=make_sampler(self), directions=directions)
        out = []
        for _ in range(n):
            pt = self.build(self.blocks[0], _OptunaChooser(study.ask()))
            if pt.pruned is None:
                pt.config = self.to_config(pt)
            out.append(pt)
        return out

    def plan(self, max_trials: int | None = None) -> list[TrialConfig]:
        """TrialConfigs of :meth:`plan_points` (pruned points left out)."""
        return [p.config for p in self.plan_points(max_trials) if p.config is not None]

    def num_trials(self, max_trials: int | None = None) -> int:
        """Trials a sweep launches: the grid size, or ``num_trials``; capped by ``max_trials``."""
        n = self.grid()[1].size if self.is_grid else self.sampler.num_trials
        return n if max_trials is None else min(n, max_trials)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of every searched key (a grid records each as categorical over its values)."""
        import optuna.distributions as od

        out: dict[str, Any] = {}
        for b in self.blocks:
            for p in b.params:
                if self.is_grid:
                    labels = [label_of(v) for v in p.grid_values()]
                    old = list(out[p.key].choices) if p.key in out else []
                    out[p.key] = od.CategoricalDistribution(old + [v for v in labels if v not in old])
                elif p.kind == "choice":
                    out[p.key] = od.CategoricalDistribution(p.labels)
                elif p.kind == "int":
                    lo, hi = p.spec.bounds
                    out[p.key] = od.IntDistribution(int(lo), int(hi), log=p.spec.log, step=int(p.spec.step or 1))
                else:
                    lo, hi = p.spec.bounds
                    out[p.key] = od.FloatDistribution(float(lo), float(hi), log=p.spec.log, step=p.spec.step)
        return out


class _OptunaChooser:
    """``choose(param)`` backed by an Optuna trial (define-by-run)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def __call__(self, p: Param) -> Any:
        return p.suggest(self.trial)


def define_by_run(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """OptunaSearch define-by-run function (module level, so the searcher pickles). No compute:
    suggests every active key and returns the point as ``{"_point": {...}}`` for the trainable."""
    try:
        point = space.build(space.blocks[0], _OptunaChooser(trial))
    except ConfigError as err:  # an expression that cannot be evaluated: record the point as pruned
        return {"_point": PointRef("main", dict(trial.params), {}, trial.number, str(err)).to_ray()}
    return {"_point": point.to_ray(trial.number)}


def make_sampler(space: SearchSpace, seed: int | None = None) -> Any:
    """The Optuna sampler of a non-grid space, seeded with ``seed`` (default: the space's)."""
    import optuna.samplers as osamp

    s = space.sampler
    seed = s.seed if seed is None else seed
    if s.kind == "random":
        return osamp.RandomSampler(seed=seed)
    if s.kind == "nsga2":
        from lolsearch.search.samplers import PicklableNSGAIISampler

        return PicklableNSGAIISampler(seed=seed, population_size=s.population_size or 50)
    if s.kind == "tpe":
        kwargs = {"n_startup_trials": s.n_startup_trials} if s.n_startup_trials is not None else {}
        return osamp.TPESampler(seed=seed, **kwargs)
    raise ValueError(f"no Optuna sampler for kind '{s.kind}'")


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def load_space(path: str | Path) -> SearchSpace:
    """Reads and validates a space file; raises :class:`ConfigError` (``file: dotted.key: message``)."""
    file = str(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError.single(file, "", "a space file must be a mapping (base:, search:, objectives:, sampler:, ...)")
    try:
        spec = SpaceFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(space_problems(err, file)) from None
    return SearchSpace(spec, file, Path(path).read_text())


def plan_table(space: SearchSpace, max_rows: int | None = None) -> Any:
    """A rich table of :meth:`SearchSpace.plan_points` (``lolsearch plan``) with the sizes in its caption."""
    from rich.table import Table

    points = space.plan_points()
    keys = space.searched_keys
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "trial_id", "block", *keys):
        table.add_column(col)
    for i, pt in enumerate(points[:max_rows] if max_rows else points, 1):
        tid = pt.config.trial_id if pt.config is not None else "pruned"
        table.add_row(str(i), tid, pt.block, *(_cell(pt.params[k]) if k in pt.params else "-" for k in keys))
    r = space.resources
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
    if space.is_grid:
        info = space.grid()[1]
        blocks = ", ".join(f"{b} {n}" for b, n in info.per_block.items())
        size = (f"grid: {info.size} trials ({blocks}); {info.tree_points} tree points, {info.excluded} excluded "
                f"by constraints, {info.duplicates} duplicates removed")
    else:
        pruned = sum(p.config is None for p in points)
        size = (f"{space.sampler.kind}: {space.sampler.num_trials} trials (seed {space.sampler.seed}); the first "
                f"{len(points)} seeded suggestions shown, {pruned} violate a constraint (recorded as pruned)")
    table.caption_justify = "left"
    table.caption = f"{space.name}: {size}\nper trial: cpu {r.cpu:g}, gpu {r.gpu:g}; objectives: {objectives}"
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
