"""CMA-ES through pycma behind a small ask/tell strategy with JSON state (gao-arl §3, Alg. 1).

`CMAStrategy` wraps ``cma.CMAEvolutionStrategy`` (Hansen's CMA-ES; gao-arl Alg. 1 lines 5 and 13:
sample Θ ~ N(μ, σ²C), update (μ, σ, C) from the ranked fitness). The coordinator sees only
``ask() -> genomes[λ, dim]``, ``tell(genomes, fitness)``, ``state()``/``restore(state)``,
``stop() -> reasons`` and ``best()``.

Fitness is an accuracy to **maximise**; pycma minimises, so `_to_pycma` negates it, in one place.

Failure policy (the one place it is applied is `tell`): a fitness that is None, NaN or ±inf (a
failed, diverged or timed-out evaluation) is replaced by ``worst finite fitness of the generation −
failure_margin`` (default margin 0.01 = one accuracy point), so failed candidates rank strictly last
while the ranks of the others are untouched (CMA-ES uses ranks only). If every candidate of a
generation failed, all get ``failure_floor`` (default 0.0, the accuracy of nothing) and pycma sees a
flat generation (it widens σ). Each substitution is counted (``failed_last``, ``failed_total``) and
a RuntimeWarning is issued; a substituted value never becomes ``best()``, which only ever holds a
finite fitness that was actually measured. pycma's own ``tolflatfitness`` (stop after 1 flat
generation) is raised to 10 by default so that one all-failed generation does not end a search.

State (JSON only, no pickle): the sampler draws N(0, 1) numbers from our own seeded
``np.random.Generator`` (never numpy's global RNG), and `state()` saves, besides our own fields and
that generator's state, every plain-data attribute (arrays, numbers, lists) of the pycma objects
that ask/tell change: the strategy (mean, σ, evolution paths pc, countiter, countevals, ...), its
sampler ``sm`` (C, B, D, eigen-decomposition counters), step-size rule ``adapt_sigma`` (ps),
``sigma_vec``, best solution and fitness histories (read by the stop criteria). Options, derived
parameters, functions, the logger, timers and caches are rebuilt identically by the constructor from
the saved config. Arrays shared between objects (e.g. ``es.C is es.sm.C``) are saved once and
re-shared on restore. `restore` writes the saved values into a freshly constructed pycma object;
it never creates objects named in the state.
"""
from __future__ import annotations

import difflib
import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import cma
import numpy as np

from evoloss.search.cma_state import capture_es, decode_value, encode_value, restore_es

STATE_FORMAT = "evoloss.cma-strategy/1"
_OURS = ("popsize", "seed", "bounds", "randn", "verbose", "verb_disp", "verb_log", "signals_filename")
# tolflatfitness 10: a few flat generations are not the end. tolfun off (-1, pycma compares with <=):
# its range test looks at the current generation too, so one generation of equal accuracies (every
# candidate failed, or all at chance level — common in a Taylor search's first generations) would stop
# the search; max_generations and pycma's other criteria (tolx, tolstagnation, ...) still apply.
_DEFAULT_CMA_OPTIONS: dict[str, Any] = {"tolflatfitness": 10, "tolfun": -1.0}
# Config keys a resumed strategy may change: stopping rules, not the trajectory.
_RESUME_MAY_CHANGE = ("max_generations",)


class _StandardNormal:
    """pycma's ``randn(lam, N)`` drawn from a Generator we own (so its state can be saved)."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.Generator(np.random.PCG64(seed))

    def __call__(self, *shape: int) -> np.ndarray:
        return self.generator.standard_normal(shape)


def _to_pycma(fitness: np.ndarray) -> list[float]:
    """The one place maximised accuracy becomes pycma's minimised objective."""
    return [float(-f) for f in fitness]


def _check_positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"CMAStrategy: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_vector(name: str, value: object, dim: int) -> list[float]:
    """``dim`` finite floats from a sequence (or one number repeated)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape == (1,) and np.ndim(value) == 0:
        arr = np.full(dim, arr[0])
    if arr.shape != (dim,) or not np.all(np.isfinite(arr)) or isinstance(value, (str, bool)):
        raise ValueError(f"CMAStrategy: {name} must be {dim} finite numbers (or one), got {value!r}")
    return arr.tolist()


def _check_number(name: str, value: object, *, positive: bool = False) -> float:
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        raise ValueError(f"CMAStrategy: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"CMAStrategy: {name} must be a positive finite number, got {value!r}")
    return float(value)


class CMAStrategy:
    """CMA-ES (pycma) maximising a fitness, with a failure policy and exact JSON state.

    Args:
        dim: genome length (>= 1).
        popsize: λ, candidates per generation (>= 2).
        sigma0: initial step size σ0 (> 0), in genome units.
        seed: seeds the sampler's own Generator (numpy's global RNG is never used).
        x0: initial mean (default zeros).
        bounds: ``(lower, upper)``, scalars or length-``dim`` sequences; pycma's BoundTransform keeps
            genomes inside. None: unbounded (loss-family codecs already map R^n into valid ranges).
        max_generations: `stop` reports ``max_generations`` once that many generations were told.
        failure_margin / failure_floor: the failure policy (module docstring).
        cma_options: further pycma options (``cma.CMAOptions``), e.g. ``{"tolfun": 1e-6}``.
    """

    def __init__(
        self,
        dim: int,
        *,
        popsize: int,
        sigma0: float,
        seed: int,
        x0: Sequence[float] | None = None,
        bounds: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
        max_generations: int | None = None,
        failure_margin: float = 0.01,
        failure_floor: float = 0.0,
        cma_options: Mapping[str, Any] | None = None,
    ) -> None:
        dim = _check_positive_int("dim", dim, 1)
        self.config: dict[str, Any] = {
            "dim": dim,
            "popsize": _check_positive_int("popsize", popsize, 2),
            "sigma0": _check_number("sigma0", sigma0, positive=True),
            "seed": _check_positive_int("seed", seed, 0),
            "x0": [0.0] * dim if x0 is None else _check_vector("x0", x0, dim),
            "max_generations": (
                None if max_generations is None else _check_positive_int("max_generations", max_generations, 1)
            ),
            "failure_margin": _check_number("failure_margin", failure_margin, positive=True),
            "failure_floor": _check_number("failure_floor", failure_floor),
            "cma_options": _checked_cma_options(cma_options or {}),
        }
        self.config["bounds"] = _checked_bounds(bounds, self.config["x0"])
        self._randn = _StandardNormal(self.config["seed"])
        # pycma never seeds or reads numpy's global RNG (seed=nan), never logs, never reads a signals file
        opts = {**_DEFAULT_CMA_OPTIONS, **self.config["cma_options"]}
        opts.update(popsize=self.config["popsize"], seed=math.nan, randn=self._randn, verbose=-9, verb_disp=0,
                    verb_log=0, signals_filename="")
        if self.config["bounds"] is not None:
            opts["bounds"] = self.config["bounds"]
        self._es = cma.CMAEvolutionStrategy(self.config["x0"], self.config["sigma0"], opts)
        self.generation = 0
        self.failed_last = 0
        self.failed_total = 0
        self._pending: np.ndarray | None = None
        self._best_genome: np.ndarray | None = None
        self._best_fitness = math.nan

    # --- ask / tell --------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        """Sample the next generation: ``float64 [popsize, dim]`` (gao-arl Alg. 1 line 5)."""
        if self._pending is not None:
            raise ValueError("CMAStrategy.ask: the previous generation was not told; call tell(genomes, fitness) first")
        genomes = np.array(self._es.ask(), dtype=np.float64)
        self._pending = genomes.copy()
        return genomes

    def tell(self, genomes: np.ndarray | Sequence[Sequence[float]], fitness: Iterable[float | None]) -> None:
        """Update the distribution from the fitness (to maximise) of the asked genomes.

        Applies the failure policy (module docstring) to None/NaN/inf entries.

        Raises:
            ValueError: no pending ask, genomes differ from the asked ones, or a wrong length.
            TypeError: a fitness entry that is not a number or None.
        """
        if self._pending is None:
            raise ValueError("CMAStrategy.tell: nothing was asked; call ask() first")
        asked = self._pending
        given = np.asarray(genomes, dtype=np.float64)
        if given.shape != asked.shape or not np.array_equal(given, asked):
            raise ValueError(
                f"CMAStrategy.tell: genomes (shape {given.shape}) differ from the {asked.shape[0]} asked by ask(); "
                "pass the asked genomes, in order"
            )
        values = self._measured(fitness, asked.shape[0])
        policy = self._apply_failure_policy(values)
        self._es.tell(list(asked), _to_pycma(policy))
        self._update_best(asked, values)
        self._pending = None
        self.generation += 1

    @staticmethod
    def _measured(fitness: Iterable[float | None], popsize: int) -> np.ndarray:
        """Fitness as float64 with NaN for None; raises on wrong length or type."""
        if isinstance(fitness, (str, bytes, Mapping)) or not isinstance(fitness, Iterable):
            raise TypeError(f"CMAStrategy.tell: fitness must be a list of numbers, got {type(fitness).__name__}")
        values = list(fitness)
        if len(values) != popsize:
            raise ValueError(f"CMAStrategy.tell: expected {popsize} fitness values, got {len(values)}: {values!r}")
        out = np.empty(popsize, dtype=np.float64)
        for i, f in enumerate(values):
            if f is None:
                out[i] = math.nan
            elif isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.integer, np.floating)):
                raise TypeError(f"CMAStrategy.tell: fitness[{i}]={f!r} must be a number, NaN or None")
            else:
                out[i] = float(f)
        return out

    def _apply_failure_policy(self, values: np.ndarray) -> np.ndarray:
        """Replace non-finite fitness: worst finite − margin, or the floor when all failed."""
        failed = ~np.isfinite(values)
        self.failed_last = int(failed.sum())
        self.failed_total += self.failed_last
        if not self.failed_last:
            return values
        finite = values[~failed]
        substitute = finite.min() - self.config["failure_margin"] if finite.size else self.config["failure_floor"]
        warnings.warn(
            f"CMA-ES generation {self.generation}: {self.failed_last} of {values.size} candidates had no finite "
            f"fitness; ranked last with fitness {substitute:g} ({self.failed_total} so far)",
            RuntimeWarning,
            stacklevel=3,
        )
        return np.where(failed, substitute, values)

    def _update_best(self, genomes: np.ndarray, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if not finite.any():
            return
        i = int(np.flatnonzero(finite)[np.argmax(values[finite])])
        if math.isnan(self._best_fitness) or values[i] > self._best_fitness:
            self._best_fitness, self._best_genome = float(values[i]), genomes[i].copy()

    # --- queries -----------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """The current distribution mean μ (a copy)."""
        return np.array(self._es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        """The current step size σ."""
        return float(self._es.sigma)

    def best(self) -> tuple[np.ndarray, float]:
        """The best measured ``(genome, fitness)`` so far; ``(mean, nan)`` before any finite fitness."""
        if self._best_genome is None:
            return self.mean, math.nan
        return self._best_genome.copy(), self._best_fitness

    def stop(self) -> dict[str, str]:
        """Why the search should stop (empty: go on): pycma's termination criteria plus ``max_generations``."""
        reasons = {str(k): f"pycma criterion {k} met (threshold {v!r})" for k, v in self._es.stop().items()}
        limit = self.config["max_generations"]
        if limit is not None and self.generation >= limit:
            reasons["max_generations"] = f"{self.generation} generations done (max_generations={limit})"
        return reasons

    # --- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly this trajectory, as strict JSON-able data."""
        if self._pending is not None:
            raise ValueError(
                "CMAStrategy.state: a generation is pending; save state after tell(), not between ask and tell"
            )
        return {
            "format": STATE_FORMAT,
            "cma_version": cma.__version__,
            "config": self.config,
            "generation": self.generation,
            "failed_total": self.failed_total,
            "failed_last": self.failed_last,
            "best_genome": None if self._best_genome is None else self._best_genome.tolist(),
            "best_fitness": encode_value(self._best_fitness),
            "rng": encode_value(self._randn.generator.bit_generator.state),
            "es": capture_es(self._es),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from `state()`, possibly through JSON); the config must match."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"CMAStrategy.restore: not a {STATE_FORMAT!r} state (got format {got!r})")
        saved = state["config"]
        for key, value in self.config.items():
            if key not in _RESUME_MAY_CHANGE and saved.get(key) != value:
                raise ValueError(
                    f"CMAStrategy.restore: config {key}={saved.get(key)!r} in the state but {value!r} here; "
                    "build the strategy with the saved config (CMAStrategy.from_state)"
                )
        if state["cma_version"] != cma.__version__:
            warnings.warn(
                f"state written by pycma {state['cma_version']}, restoring with {cma.__version__}", RuntimeWarning
            )
        restore_es(self._es, state["es"])
        self._randn.generator.bit_generator.state = decode_value(state["rng"])
        self.generation = int(state["generation"])
        self.failed_total, self.failed_last = int(state["failed_total"]), int(state["failed_last"])
        best = state["best_genome"]
        self._best_genome = None if best is None else np.asarray(best, dtype=np.float64)
        self._best_fitness = float(decode_value(state["best_fitness"]))
        self._pending = None

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, max_generations: int | None | str = "saved") -> "CMAStrategy":
        """A new strategy built from the config saved in ``state``, then restored.

        ``max_generations`` may differ from the saved one (e.g. to extend a finished search); the
        default keeps the saved value. Everything else must match, as it shapes the trajectory.
        """
        if not isinstance(state, Mapping) or not isinstance(state.get("config"), Mapping):
            raise ValueError(f"CMAStrategy.from_state: not a {STATE_FORMAT!r} state")
        cfg = dict(state["config"])
        if max_generations != "saved":
            cfg["max_generations"] = max_generations
        bounds = cfg.pop("bounds")
        strategy = cls(cfg.pop("dim"), bounds=None if bounds is None else tuple(bounds), **cfg)
        strategy.restore(state)
        return strategy


def _checked_bounds(bounds: object, x0: list[float]) -> list[list[float]] | None:
    """``[lower, upper]`` as float lists (x0 strictly inside), or None."""
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"CMAStrategy: bounds must be (lower, upper), got {bounds!r}")
    lower, upper = (_check_vector(n, b, len(x0)) for n, b in zip(("bounds[0]", "bounds[1]"), bounds))
    if not all(lo < x < hi for lo, x, hi in zip(lower, x0, upper)):
        raise ValueError(
            f"CMAStrategy: x0={x0} must lie strictly inside bounds {bounds!r}; widen the bounds or move x0"
        )
    return [lower, upper]


def _checked_cma_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Extra pycma options: known names only (close matches suggested), not the ones we set."""
    if not isinstance(options, Mapping):
        raise TypeError(f"CMAStrategy: cma_options must be a dict, got {type(options).__name__}")
    known = cma.CMAOptions()
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in _OURS:
            raise ValueError(f"CMAStrategy: cma_options[{key!r}] is set by CMAStrategy; use its own argument instead")
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=3)
            hint = f"; did you mean {close}?" if close else "; see cma.CMAOptions()"
            raise ValueError(f"CMAStrategy: unknown pycma option {key!r}{hint}")
        if not (value is None or isinstance(value, (bool, int, float, str))) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise TypeError(f"CMAStrategy: cma_options[{key!r}]={value!r} must be a finite number, bool or string")
        out[str(key)] = value
    return out
