"""``axkern search``: which multiplier in which layer (ALWANN's layer-wise NSGA-II).

:func:`search` assigns a multiplier from a list to every Conv2D/Dense layer of a model (the
survey's model protocol, see :data:`axkern.survey.MODEL_PROTOCOL`), optionally through at most
``tiles`` distinct multipliers (ALWANN's hardware tiles: each layer runs on one tile) and with
or without weight tuning per layer. NSGA-II (pymoo) minimizes two objectives:

- the error, 100 - held-out accuracy (percent);
- the relative cost, ``sum_l MACs_l * cost(m_l) / (sum_l MACs_l * cost(exact))``, where the
  cost of a multiplier is its power from the metadata (EvoApproxLib's ``PDK45_PWR``, or a
  ``// power = ...`` line), another numeric metadata key chosen with ``cost=``, or, when not
  every multiplier has a power figure, its partial-product bits (``PP_BITS``; ``bits**2`` for
  an exact array multiplier).

The exact configuration and every uniform configuration (one multiplier everywhere, tuned and
untuned) are always evaluated and seed the first population. Evaluations run on a Dask cluster
(:mod:`axkern.cluster`): a local one by default, or an existing one at ``scheduler``.

Every configuration is evaluated at most once: results are cached by configuration within a
search whose model, data and multiplier tables are identified by content hashes (written to
``search.json``). The algorithm's randomness depends only on ``seed`` and on the evaluated
accuracies, and each generation is collected whole and read in population order, so the same
seed gives the same front with any number of workers; ``resume`` replays a stopped search
from its ``evaluations.csv`` (no evaluation is repeated) and continues it, ending on the front
an uninterrupted run would have found.

Files written to ``output``: ``pareto.csv`` (the configurations no evaluated configuration
dominates), ``evaluations.csv`` (every configuration evaluated, plus the generation that first
asked for it), ``pareto.png`` and ``search.json``.

Models: an :class:`axkern.nn.Sequential` gives its MACs per layer from its shapes; any other
protocol model needs a method ``layer_macs(input_shape)`` returning ``{layer: MACs per
sample}`` for a per-sample input shape, or pass ``macs={layer: MACs}``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shlex
import sys
import time
from fractions import Fraction

import numpy as np

from .backends import check_backend
from .cluster import SEARCH_INSTALL_HINT
from .lut import Multiplier
from .survey import (_META_COLUMNS, MissingDependency, _check_label_range, _columns,
                     _label_points, _load_model, _load_multiplier, _meta_columns, _meta_number,
                     _require, _resolve_multipliers, load_data)

__all__ = ["search", "multiplier_cost", "relative_cost", "pareto_mask", "add_parser"]

FORMAT = "axkern-search"
FORMAT_VERSION = 1
DEFAULTS = {"population": 32, "generations": 20, "seed": 0, "tune": "both", "tiles": None,
            "batch_size": None}


def _require_search(module, purpose):
    return _require(module, purpose, SEARCH_INSTALL_HINT)


# ------------------------------------------------------------------------------ cost model
def multiplier_cost(m, key=None):
    """A multiplier's cost figure from its metadata, or None when it has none.

    Parameters
    ----------
    m : Multiplier
    key : str, optional
        None or ``"power"``, ``"area"``, ``"delay"``, ``"pp_bits"``: the survey's column of
        that name, read by the same helper with the same precedence (EvoApproxLib's
        ``PDK45_PWR`` / ``PDK45_AREA`` / ``PDK45_DELAY`` first, then ``power``, then
        ``power_*``, ``Power (45)``...). Any other key: the metadata entry of that name
        (case-insensitive).

    Returns
    -------
    float or int or None
        The value's leading number (units dropped).
    """
    k = "power" if key is None else str(key).strip().lower()
    if k in _META_COLUMNS:
        # the survey's helper: its table and this cost read the same figure
        return _meta_columns(m).get(k)
    meta = {str(k).strip().lower(): v for k, v in m.metadata.items()}
    return _meta_number(meta[k]) if k in meta else None


def _resolve_costs(mults, key, explicit_list):
    """(costs, cost key, exact index, notes, mults); may drop multipliers without a cost."""
    notes = []
    exact_idx = next((i for i, m in enumerate(mults) if m.is_exact()), None)
    if exact_idx is None:
        m0 = mults[0]
        mults = list(mults) + [Multiplier.exact(m0.bits, m0.signed)]
        exact_idx = len(mults) - 1
        mults[exact_idx].name = f"mul{m0.bits}{'s' if m0.signed else 'u'}_exact"
        if any(m.name == mults[exact_idx].name for m in mults[:-1]):
            mults[exact_idx].name += "_ref"
        notes.append(f"the list has no exact multiplier: {mults[exact_idx].name} added")
    synthesized = exact_idx == len(mults) - 1 and not mults[exact_idx].metadata
    bits2 = mults[exact_idx].bits ** 2

    def figure(i, k):
        m = mults[i]
        v = multiplier_cost(m, k)
        if v is None and k == "pp_bits" and i == exact_idx and synthesized:
            v = bits2  # an exact n x n array builds n*n partial-product bits
        return v

    default_key = key is None
    powers = [figure(i, "power") for i in range(len(mults))]
    if default_key:
        key = "power" if all(p is not None for p in powers) else "pp_bits"
    else:
        key = str(key).strip()
        if not key:
            raise ValueError("cost must name a numeric metadata key, got an empty string")
    if key == "power" and default_key:
        costs = powers
    elif key.lower() == "pp_bits":
        key = "pp_bits"
        costs = [figure(i, "pp_bits") for i in range(len(mults))]
        # PP_BITS = 0 marks a multiplier without a partial-product array (logarithmic): the
        # bit count says nothing about its cost, so it has no figure in this model, whether
        # the key is the default or named
        lacking = [i for i, c in enumerate(costs) if c is None or (c == 0 and i != exact_idx)]
        if lacking:
            names = [mults[i].name for i in lacking]
            if explicit_list:
                have_power = all(powers[i] is not None for i in range(len(mults))
                                 if i != exact_idx)
                if default_key and synthesized and have_power:
                    raise ValueError(
                        f"multipliers {names} have power figures but no partial-product bit "
                        f"count (PP_BITS > 0), and the exact multiplier added to the list has "
                        f"no power figure: put an exact multiplier carrying one in the list "
                        f"(e.g. EvoApproxLib's mul8u_1JFF), or choose another key with "
                        f"cost=/--cost")
                what = ("neither power metadata nor a partial-product bit count" if default_key
                        else "no partial-product bit count")
                raise ValueError(
                    f"multipliers {names} have {what} (PP_BITS > 0): choose a metadata key "
                    f"they all have with cost=/--cost, or leave them out")
            notes.append(f"left out {', '.join(names)}: "
                         f"{'no power metadata and ' if default_key else ''}no partial-product "
                         f"array to count (PP_BITS 0 or absent)")
            keep = [i for i in range(len(mults)) if i not in lacking]
            exact_name = mults[exact_idx].name
            mults = [mults[i] for i in keep]
            costs = [costs[i] for i in keep]
            exact_idx = [m.name for m in mults].index(exact_name)
        if default_key:
            notes.append("cost: partial-product bits (PP_BITS), as not every multiplier has a "
                         "power figure")
    else:
        costs = [figure(i, key.lower()) for i in range(len(mults))]
        lacking = [mults[i].name for i, c in enumerate(costs) if c is None]
        if lacking:
            extra = (" (the exact multiplier was added without metadata: put an exact "
                     "multiplier that has it in the list)") if synthesized and \
                costs[exact_idx] is None else ""
            raise ValueError(f"multipliers {lacking} have no numeric metadata {key!r}{extra}")
    for m, c in zip(mults, costs):
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"multiplier {m.name} has cost {key}={c}: expected a finite, "
                             f"non-negative number")
    if costs[exact_idx] <= 0:
        raise ValueError(f"the exact multiplier {mults[exact_idx].name} has cost {key}="
                         f"{costs[exact_idx]}: relative costs need a positive exact cost")
    return costs, key, exact_idx, notes, mults


def relative_cost(macs, costs, exact_cost):
    """``sum(macs[l] * costs[l]) / (sum(macs) * exact_cost)``, correctly rounded.

    Computed in exact rational arithmetic, so that it does not depend on the order of the
    layers and the exact configuration costs exactly 1.0.
    """
    num = sum(Fraction(int(n)) * Fraction(c) for n, c in zip(macs, costs))
    den = Fraction(int(sum(int(n) for n in macs))) * Fraction(exact_cost)
    return float(num / den)


def _layer_macs(net, x, macs):
    layers = net.compute_layers
    if macs is not None:
        if not isinstance(macs, dict):
            raise TypeError(f"macs must be a dict {{layer: MACs per sample}}, got "
                            f"{type(macs).__name__}")
        out = macs
    else:
        if hasattr(net, "layer_macs"):
            out = net.layer_macs(tuple(x.shape[1:]))
        else:
            raise TypeError(
                f"the search weighs each layer's cost by its MACs: the model "
                f"({type(net).__name__}) has no method layer_macs(input_shape) returning "
                f"{{layer: MACs per sample}}; add one or pass macs={{layer: MACs}}")
    missing = [l for l in layers if l not in out]
    if missing:
        raise ValueError(f"no MAC count for layers {missing} (expected one per layer of "
                         f"{layers})")
    unknown = [l for l in out if l not in layers]
    if unknown and macs is not None:   # (a misspelt name would leave its count unused)
        raise ValueError(f"macs names layers {unknown} that the model does not have: "
                         f"expected names from {layers}")
    vals = []
    for l in layers:
        v = out[l]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"MACs of layer {l!r} must be a non-negative int, got {v!r}")
        vals.append(int(v))
    if sum(vals) <= 0:
        raise ValueError("the layers have no MACs: nothing to weigh costs by")
    return vals


# ------------------------------------------------------------------------------ hashing
def _sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            p = np.ascontiguousarray(p)
            h.update(f"{p.dtype.str}{p.shape}".encode())
            h.update(p.tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _model_hash(net):
    """Content hash of the model without its multiplier settings."""
    from .nn import Sequential

    ref = net.copy()
    ref.configure(multiplier=None, tune=False)
    if isinstance(ref, Sequential):
        parts = [json.dumps([l.config() for l in ref.layers], sort_keys=True, default=str),
                 json.dumps(ref.settings(), sort_keys=True, default=str)]
        for l in ref.layers:
            for k, v in sorted(l.arrays().items()):
                parts += [k, np.asarray(v)]
        return _sha(*parts)
    if hasattr(ref, "fingerprint"):
        return _sha(ref.fingerprint())
    import pickle

    return _sha(pickle.dumps(ref, protocol=4))


def _mult_hash(m):
    return _sha(m.bits, m.signed, np.asarray(m.table, dtype=np.int64))


# ------------------------------------------------------------------------------ the genome
class _Space:
    """Integer genes <-> configurations ``((multiplier index, tuned), ...)`` per layer."""

    def __init__(self, n_layers, n_mults, exact, tiles, tune):
        self.L, self.K, self.exact, self.T, self.tune = n_layers, n_mults, exact, tiles, tune
        head = [] if tiles is None else [n_mults - 1] * tiles
        body = [n_mults - 1 if tiles is None else tiles - 1] * n_layers
        bits = [1] * n_layers if tune == "both" else []
        self.xu = np.array(head + body + bits, dtype=np.int64)
        self.xl = np.zeros_like(self.xu)

    @property
    def n_var(self):
        return len(self.xu)

    def decode(self, x):
        x = [int(round(v)) for v in x]
        if self.T is None:
            mults, rest = x[:self.L], x[self.L:]
        else:
            tiles, rest = x[:self.T], x[self.T:]
            mults, rest = [tiles[t] for t in rest[:self.L]], rest[self.L:]
        if self.tune == "both":
            tuned = [bool(b) for b in rest[:self.L]]
        else:
            tuned = [self.tune == "yes"] * self.L
        # tuning the exact multiplier changes nothing: one configuration, not two
        return tuple((m, t and m != self.exact) for m, t in zip(mults, tuned))

    def encode_uniform(self, m, tuned, rng=None):
        # tiles: every layer on tile 0; the unused tiles get random multipliers, which keeps
        # the seeds' genomes diverse without changing what they decode to
        head = [] if self.T is None else [m] + [
            int(v) for v in (rng.integers(0, self.K, self.T - 1) if rng is not None
                             else [m] * (self.T - 1))]
        body = [m] * self.L if self.T is None else [0] * self.L
        bits = [int(tuned)] * self.L if self.tune == "both" else []
        return np.array(head + body + bits, dtype=np.int64)

    def seeds(self, rng):
        out = [self.encode_uniform(self.exact, False, rng)]
        for m in range(self.K):
            if m == self.exact:
                continue
            for t in ((False, True) if self.tune == "both" else (self.tune == "yes",)):
                out.append(self.encode_uniform(m, t, rng))
        return out


def pareto_mask(points):
    """Which rows of ``points`` (n, k), all objectives minimized, no other row dominates.

    Row a dominates row b when a <= b in every objective and a < b in at least one; equal
    rows do not dominate each other.
    """
    p = np.asarray(points, dtype=float)
    keep = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        le = np.all(p <= p[i], axis=1)
        lt = np.any(p < p[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


# ------------------------------------------------------------------------------ files
def _row(layers, names, config, acc, cost, gen=None):
    r = {l: names[m] for l, (m, _) in zip(layers, config)}
    tuned = [l for l, (_, t) in zip(layers, config) if t]
    field = ";".join(tuned) if tuned else "none"
    if ";" in field and any(";" in l for l in layers) and _split_tuned_or_none(
            field, layers) != tuned:
        raise ValueError(f"the layer names {layers} make the tuned field {field!r} ambiguous "
                         f"(a name that is others joined by ';'): rename the layers")
    r.update(accuracy=acc, relative_cost=cost, tuned=field)
    if gen is not None:
        r["generation"] = gen
    return r


def _split_tuned(text, layers):
    """The tuned layers a ``tuned`` field names: ``none``, or names joined by ``;`` in the
    order of ``layers``. A name may hold ``;`` itself (TensorFlow-converted ONNX graphs name
    nodes ``a/BiasAdd;a/Conv2D``), so the field is read along the layer order, not split;
    ValueError when no reading or more than one exists."""
    if text in ("", "none"):
        return []
    found = []

    def walk(pos, first, taken):
        for j in range(first, len(layers)):
            if len(found) > 1:
                return
            name = layers[j]
            end = pos + len(name)
            if not text.startswith(name, pos):
                continue
            if end == len(text):
                found.append(taken + [name])
            elif text[end] == ";" and end + 1 < len(text):
                walk(end + 1, j + 1, taken + [name])

    walk(0, 0, [])
    if len(found) != 1:
        raise ValueError(f"tuned field {text!r} names the layers {layers} "
                         f"{'in more than one way' if found else 'in no way'}")
    return found[0]


def _has_rows(path):
    """Whether a CSV file holds a line past its header (no parsing: a folder check)."""
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return bool(f.readline()) and bool(f.readline().strip())


def _split_tuned_or_none(text, layers):
    try:
        return _split_tuned(text, layers)
    except ValueError:
        return None


def _check_layer_names(layers):
    """Refuse names that are other layers' names joined by ';' (the tuned field of the one
    would read as the others'), before anything is evaluated; rarer collisions of longer
    joins are caught when their row is written (_row)."""
    for i, name in enumerate(layers):
        others = layers[:i] + layers[i + 1:]
        if ";" in name and _split_tuned_or_none(name, others) is not None:
            raise ValueError(f"layer {name!r} is other layers' names joined by ';': the "
                             f"search's tuned field could not tell them apart; rename it")


def _write_csv(path, layers, rows, extra=()):
    cols = list(layers) + ["accuracy", "relative_cost", "tuned"] + list(extra)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])
    os.replace(tmp, path)


def _read_evaluations(path, layers, names, exact):
    """{config: (accuracy, generation)} from an evaluations.csv (partial last line skipped)."""
    index = {n: i for i, n in enumerate(names)}
    out = {}
    if not os.path.isfile(path):
        return out
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # a line cut short when the search was stopped
    rows = list(csv.reader(lines))
    if not rows:
        return out
    head = rows[0]
    need = list(layers) + ["accuracy", "tuned", "generation"]
    if any(c not in head for c in need):
        raise ValueError(f"{path}: expected columns {need}, found {head}")
    col = {c: head.index(c) for c in head}
    for r in rows[1:]:
        if len(r) != len(head):
            continue  # a line cut short when the search was stopped
        try:
            ms = [index[r[col[l]]] for l in layers]
            acc = float(r[col["accuracy"]])
            gen = int(r[col["generation"]])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: row {r} names a multiplier not in the search's list "
                             f"or holds no number") from None
        try:
            tuned = set(_split_tuned(r[col["tuned"]], layers))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        cfg = tuple((m, l in tuned and m != exact) for l, m in zip(layers, ms))
        out.setdefault(cfg, (acc, gen))
    return out


# ------------------------------------------------------------------------------ the search
def _check_int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def _spec_of(spec, m):
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        return os.path.abspath(s) if os.path.exists(s) else s
    return m.name


def _cli_spec(spec, m, shipped):
    """How ``axkern eval --assign`` names multiplier ``m`` (given to the search as ``spec``),
    or None when it cannot.

    A shipped name stays a name; a file becomes ``NAME=ABSOLUTE_PATH`` (the form
    :func:`axkern.library.parse_spec` reads, keeping the search's name and any ``:signed``
    suffix). A Multiplier object is nameable only when it is the shipped one of its name.
    """
    from .library import parse_spec

    if isinstance(spec, Multiplier):
        if m.name in shipped and _mult_hash(_load_multiplier(m.name)) == _mult_hash(m):
            return m.name
        return None
    s = os.fspath(spec)
    if s in shipped:   # a bare shipped name wins over a file of that name, as when loaded
        return s
    try:
        _, source, signed = parse_spec(s)
    except ValueError:
        return None
    if not os.path.isfile(source):
        return s if source in shipped and "," not in s else None
    source = os.path.abspath(source)
    if "," in source:   # --assign splits its list at commas: no way to pass this path
        return None
    out = f"{m.name}={source}" if re.fullmatch(r"[^=/\\:,\s]+", m.name) else source
    if signed is not None:
        out += ":signed" if signed else ":unsigned"
    return out


def search(model=None, multipliers=None, *, data=None, limit=None, output=None,
           tiles=None, tune=None, cost=None, population=None, generations=None, seed=None,
           budget=None, tolerance=0.5, scheduler=None, workers=None, connect_timeout=5.0,
           resume=None, macs=None, signedness="auto", batch_size=None, backend="auto",
           num_threads=None, progress=True, plot=True, verbose=True, on_generation=None):
    """Layer-wise multiplier assignment by NSGA-II: accuracy against relative cost.

    Parameters
    ----------
    model : Sequential, torch.nn.Module, path or None
        Any model :func:`axkern.survey` takes (None: the shipped digits CNN).
    multipliers : list of (Multiplier, shipped name or path), optional
        At least two, of one bit width and signedness. Default: the shipped multipliers of the
        model's signedness (those without a cost figure left out). An exact multiplier is
        added when the list has none.
    data, limit
        Held-out data (see :func:`axkern.survey.load_data`).
    output : str, optional
        Folder for the files (``pareto.csv``, ``evaluations.csv``, ``pareto.png``,
        ``search.json``); default ``axkern-search``. With ``resume``, the resumed folder
        (another one is an error: a resumed search continues in its own files).
    tiles : int, optional
        ALWANN tiles: at most this many distinct multipliers, each layer on one tile.
    tune : {"both", "yes", "no"}, optional
        Weight tuning: a gene per layer ("both", the default), every approximate layer tuned,
        or none.
    cost : str, optional
        Metadata key of the cost figure (default: power, else partial-product bits).
    population, generations, seed : int, optional
        NSGA-II population (default 32), offspring generations after the first population
        (default 20) and random seed (default 0).
    budget : float, optional
        Wall-clock seconds; the search stops when they are spent (``resume`` continues it).
    tolerance : float
        Accuracy points below the exact configuration that the summary allows (default 0.5).
    scheduler : str, optional
        Dask scheduler address of an existing cluster; default: a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: one per core).
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    resume : str, optional
        Folder of a stopped search to continue (its settings are used; model and data must be
        the same). Its files are updated in place.
    macs : dict, optional
        ``{layer: MACs per sample}`` for models that cannot count them.
    signedness : {"auto", "unsigned", "signed", "all"}
        Which shipped multipliers the default list takes.
    batch_size, backend, num_threads
        Passed to the model's forward pass (``num_threads`` per task; default 1).
    progress, plot, verbose : bool
        tqdm progress bar; ``pareto.png``; the printed summary.
    on_generation : callable, optional
        ``on_generation(generation, evaluated)`` after each complete generation.

    Returns
    -------
    dict
        ``front`` and ``evaluations`` (rows: one entry per layer, ``accuracy`` in percent,
        ``relative_cost``, ``tuned``), ``exact_accuracy``, ``float_accuracy``, ``best`` (the
        cheapest front row within ``tolerance``), ``layers``, ``macs``, ``multipliers``,
        ``costs``, ``cost_key``, ``generations_done``, ``finished``, ``seconds``, ``files``.
    """
    t0 = time.monotonic()
    if isinstance(tune, bool):   # as saved: a resumed search compares like with like
        tune = "yes" if tune else "no"
    given = {"population": population, "generations": generations, "seed": seed, "tune": tune,
             "tiles": tiles, "cost": cost, "batch_size": batch_size}
    saved = None
    if resume is not None:
        if output is not None and os.path.abspath(os.fspath(output)) != os.path.abspath(
                os.fspath(resume)):
            raise ValueError(f"--resume {os.fspath(resume)} continues in that folder: leave "
                             f"--output out (given {os.fspath(output)!r})")
        saved = _read_state(resume)
        output = os.fspath(resume)
        settings = dict(saved["settings"])
        clash = [f"{k}={settings.get(k)!r} (given {v!r})" for k, v in given.items()
                 if v is not None and k != "generations" and v != settings.get(k)]
        if clash:
            raise ValueError(f"--resume {output}: the search there used {', '.join(clash)}; "
                             f"leave those options out to continue it")
        if generations is None:
            generations = settings["generations"]
        elif isinstance(generations, (int, np.integer)) and not isinstance(generations, bool) \
                and generations < settings["generations"]:
            # its evaluations and front already hold the later generations
            raise ValueError(f"--resume {output}: the search there runs "
                             f"{settings['generations']} generations; generations may be "
                             f"raised, not lowered (given {generations})")
        population, seed, tune, tiles = (settings["population"], settings["seed"],
                                         settings["tune"], settings["tiles"])
        cost, batch_size = settings["cost"], settings["batch_size"]
        if multipliers is None:
            multipliers = [m["spec"] for m in saved["multipliers"] if not m.get("added")]
            for spec in multipliers:
                try:
                    _load_multiplier(spec)
                except (ValueError, OSError) as e:
                    # a Multiplier object is recorded by its name only
                    raise ValueError(f"--resume {output}: multiplier {spec!r} of the search "
                                     f"there cannot be loaded again ({e}); a search given "
                                     f"Multiplier objects or since-moved files needs them "
                                     f"passed again (multipliers=[...])") from None
        explicit = saved.get("explicit_list", True)
    else:
        explicit = multipliers is not None
        output = "axkern-search" if output is None else output
    population = _check_int("population", DEFAULTS["population"] if population is None
                            else population, 4)
    generations = _check_int("generations", DEFAULTS["generations"] if generations is None
                             else generations, 0)
    seed = _check_int("seed", DEFAULTS["seed"] if seed is None else seed, 0)
    tune = DEFAULTS["tune"] if tune is None else tune
    if tune not in ("both", "yes", "no"):
        raise ValueError(f"tune must be 'both', 'yes' or 'no', got {tune!r}")
    if tiles is not None:
        tiles = _check_int("tiles", tiles, 1)
    if budget is not None and not (isinstance(budget, (int, float)) and not isinstance(
            budget, bool) and budget > 0):
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number of points, got {tolerance!r}")
    # checked here, not by every task on the cluster after the float baseline (the upper
    # bound is left to the workers: a remote one may have more cores than this machine)
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(
            num_threads, (int, np.integer)) or num_threads < 1):
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    check_backend(backend)
    if signedness not in ("auto", "unsigned", "signed", "all"):
        raise ValueError(f"signedness must be 'auto', 'unsigned', 'signed' or 'all', got "
                         f"{signedness!r}")
    if saved is None and os.path.isfile(os.path.join(os.fspath(output), "search.json")):
        try:
            st = _read_state(output)
            stopped = not st.get("finished", True) and (
                st.get("generations_done", -1) >= 0 or
                _has_rows(os.path.join(os.fspath(output), "evaluations.csv")))
        except (OSError, ValueError):
            stopped = False   # not a state this axkern wrote: the folder is the user's call
        if stopped:
            # starting over would overwrite the evaluations it took to get there
            raise ValueError(f"{os.fspath(output)} holds a search that stopped before its "
                             f"end: --resume {os.fspath(output)} continues it; remove the "
                             f"folder or choose another --output to start over")
    _require_search("pymoo", "the search")
    _require_search("distributed", "the search's evaluation on Dask")
    if progress:
        _require("tqdm", "the progress bar")
    if plot:
        _require("matplotlib", "the search plot")

    net = _load_model(model)
    layers = list(net.compute_layers)
    if not layers:
        raise ValueError("the model has no Conv2D or Dense layer to approximate")
    _check_layer_names(layers)
    x, y, desc = load_data(net, data, limit)
    lmacs = _layer_macs(net, x, macs)
    if signedness == "auto":
        signedness = "signed" if net.metadata.get("signed", False) else "unsigned"

    # multipliers: at least two, one kind, each with a cost
    specs = None if multipliers is None else (
        [multipliers] if isinstance(multipliers, (str, os.PathLike, Multiplier)) else
        list(multipliers))
    mults = _resolve_multipliers(specs, signedness)
    if len(mults) < 2:
        raise ValueError(f"the search needs at least two multipliers to choose from, got "
                         f"{[m.name for m in mults]}")
    kinds = sorted({(m.bits, m.signed) for m in mults})
    if len(kinds) > 1:
        groups = {k: [m.name for m in mults if (m.bits, m.signed) == k] for k in kinds}
        raise ValueError("the multipliers must share bit width and signedness, got " + "; ".join(
            f"{b}-bit {'signed' if s else 'unsigned'}: {', '.join(n)}"
            for (b, s), n in groups.items()))
    from .library import list_multipliers

    spec_by_name = {}
    shipped = set(list_multipliers())
    # how the printed `reproduce:` command names each multiplier (None: it cannot)
    cli_specs = {m.name: m.name if m.name in shipped else None for m in mults}
    if specs is not None:
        for s, m in zip(specs, mults):
            spec_by_name[m.name] = _spec_of(s, m)
            cli_specs[m.name] = _cli_spec(s, m, shipped)
    given_names = {m.name for m in mults}
    try:
        costs, cost_key, exact, notes, mults = _resolve_costs(mults, cost, explicit)
    except ValueError as e:
        if saved is None:
            raise
        # (a search started by an older axkern, which counted PP_BITS 0 as cost 0)
        raise ValueError(f"--resume {output}: {e}; the search there cannot continue with "
                         f"these costs: start a new one") from None
    if len(mults) < 2:
        raise ValueError("fewer than two multipliers have a cost figure: nothing to choose from")
    # genes index the list in order of cost (so that small gene steps are small cost steps)
    order = sorted(range(len(mults)), key=lambda i: (costs[i], mults[i].name))
    mults = [mults[i] for i in order]
    costs = [costs[i] for i in order]
    exact = order.index(exact)
    names = [m.name for m in mults]
    if len(set(names)) != len(names):
        raise ValueError(f"multiplier names must be unique, got {names}")

    model_hash, data_hash = _model_hash(net), _sha(x, y)
    mult_records = [{"name": m.name, "sha256": _mult_hash(m), "cost": c,
                     "spec": spec_by_name.get(m.name, m.name),
                     "added": m.name not in given_names} for m, c in zip(mults, costs)]
    settings = {"population": population, "generations": generations, "seed": seed,
                "tune": tune, "tiles": tiles, "cost": cost, "batch_size": batch_size}
    if saved is not None:
        _check_resume(output, saved, net, model_hash, desc, data_hash, mult_records)

    space = _Space(len(layers), len(mults), exact, tiles, tune)
    exact_cost = costs[exact]

    def cost_of(cfg):
        return relative_cost(lmacs, [costs[m] for m, _ in cfg], exact_cost)

    # the float baseline and the labels' check before any file is written: data that fails
    # here must leave no folder that looks like a stopped search
    net.configure(multiplier=None, tune=False)
    float_acc = 100.0 * net.accuracy(x, y, batch_size=batch_size)
    _check_label_range(net, x, y, batch_size)   # (after: a wrong shape is reported for x)
    os.makedirs(output, exist_ok=True)
    eval_path = os.path.join(output, "evaluations.csv")
    cache = {}  # config -> (accuracy, generation)
    if saved is not None:
        cache.update(_read_evaluations(eval_path, layers, names, exact))
    state_doc = {"format": FORMAT, "version": FORMAT_VERSION, "model": net.name or "model",
                 "model_sha256": model_hash, "data": desc, "data_sha256": data_hash,
                 "samples": int(len(y)), "layers": layers, "macs": lmacs,
                 "cost_key": cost_key, "exact": names[exact], "multipliers": mult_records,
                 "explicit_list": explicit, "settings": settings, "notes": notes,
                 "generations_done": -1, "finished": False}
    _write_state(output, state_doc)
    if saved is None:
        _write_csv(eval_path, layers, [], extra=("generation",))

    if num_threads is None:
        num_threads = 1
    runner = _Runner(net, x, y, mults, backend, num_threads, batch_size, scheduler, workers,
                     connect_timeout, layers, names, eval_path, cache, progress, cost_of)
    deadline = None if budget is None else t0 + float(budget)
    done, finished = -1, False
    try:
        done, finished = _nsga2(space, runner, cost_of, population, generations, seed, deadline,
                                on_generation)
    finally:
        runner.close()
    seconds = time.monotonic() - t0

    # results: every evaluation, the front among all of them
    configs = sorted(cache)
    evals = [_row(layers, names, c, cache[c][0], cost_of(c), cache[c][1]) for c in configs]
    order_e = sorted(range(len(configs)), key=lambda i: (cache[configs[i]][1], configs[i]))
    _write_csv(eval_path, layers, [evals[i] for i in order_e], extra=("generation",))
    pts = np.array([[100.0 - r["accuracy"], r["relative_cost"]] for r in evals]).reshape(-1, 2)
    mask = pareto_mask(pts) if len(evals) else np.zeros(0, dtype=bool)
    front = sorted((evals[i] for i in np.flatnonzero(mask)),
                   key=lambda r: (r["relative_cost"], -r["accuracy"],
                                  tuple(r[l] for l in layers), r["tuned"]))
    files = [eval_path]
    path = os.path.join(output, "pareto.csv")
    _write_csv(path, layers, front)
    files.append(path)
    exact_cfg = tuple((exact, False) for _ in layers)
    exact_acc = cache[exact_cfg][0] if exact_cfg in cache else None
    best = None
    if exact_acc is not None:
        ok = [r for r in front if r["accuracy"] >= exact_acc - tolerance - 1e-9]
        # ties: the configuration with fewer tuned layers (less to do in hardware)
        best = min(ok, key=lambda r: (r["relative_cost"], -r["accuracy"],
                                      len(_split_tuned(r["tuned"], layers)))
                   ) if ok else None
    uniform = {}
    for r in evals:
        ms = {r[l] for l in layers}
        if len(ms) == 1:
            uniform[(ms.pop(), r["tuned"] != "none")] = r
    result = {"model": net.name or "model", "data": desc, "samples": int(len(y)),
              "float_accuracy": float_acc, "exact_accuracy": exact_acc, "layers": layers,
              "macs": dict(zip(layers, lmacs)), "multipliers": names,
              "costs": dict(zip(names, costs)), "cost_key": cost_key, "exact": names[exact],
              "front": front, "evaluations": evals, "best": best, "tolerance": tolerance,
              "uniform": list(uniform.values()), "notes": notes, "generations_done": done,
              "generations": generations, "finished": finished, "seconds": seconds,
              "output": output}
    png = os.path.join(output, "pareto.png")
    if plot and evals:
        files.append(_plot(result, png))
    elif os.path.exists(png):
        os.remove(png)  # not this search's plot
    state_doc.update(generations_done=done, finished=finished,
                     front=[{k: r[k] for k in r if k != "generation"} for r in front],
                     exact_accuracy=exact_acc, float_accuracy=float_acc,
                     evaluations=len(evals), seconds=seconds)
    files.append(_write_state(output, state_doc))
    result["files"] = files
    result["command"] = None
    if best is not None:
        # the exact multiplier the search added is eval's default for unnamed layers
        added = {r["name"] for r in mult_records if r["added"]}
        for name in added:
            cli_specs.setdefault(name, name if name in shipped else None)
        result["command"] = _eval_command(best, layers, cli_specs, added, model, data, limit,
                                          batch_size)
    if verbose:
        print(format_summary(result))
        for f in files:
            print(f"wrote {f}")
    return result


class _Runner:
    """Evaluates configurations not in the cache, on Dask, started on first need."""

    def __init__(self, net, x, y, mults, backend, num_threads, batch_size, scheduler, workers,
                 connect_timeout, layers, names, eval_path, cache, progress, cost_of):
        self.state = {"model": net, "x": x, "y": y, "multipliers": mults, "backend": backend,
                      "num_threads": num_threads, "batch_size": batch_size}
        self.conn = (scheduler, workers, connect_timeout)
        self.layers, self.names, self.eval_path, self.cache = layers, names, eval_path, cache
        self.ev = self.token = self.bar = None
        self.progress, self.cost_of = progress, cost_of

    def _start(self):
        import uuid

        from .cluster import Evaluator

        scheduler, workers, timeout = self.conn
        self.ev = Evaluator(scheduler, workers=workers, connect_timeout=timeout)
        self.token = self.ev.broadcast(uuid.uuid4().hex, self.state)

    def evaluate(self, configs, generation, deadline, label):
        """Evaluate the uncached configs; False when the deadline stopped it."""
        todo = sorted({c for c in configs if c not in self.cache})
        if not todo:
            return True
        if self.ev is None:
            self._start()
        if self.progress and self.bar is None:
            tqdm = _require("tqdm", "the progress bar").tqdm
            self.bar = tqdm(total=0, desc=label, unit="eval", file=sys.stderr, leave=True)
        if self.bar is not None:
            self.bar.total += len(todo)
            self.bar.set_description(label)
            self.bar.refresh()
        tasks = [(c, {l: (m, t) for l, (m, t) in zip(self.layers, c)}) for c in todo]
        with open(self.eval_path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)

            def on_result(cfg, acc):
                # appended as they come, so that a killed search loses no evaluation
                r = _row(self.layers, self.names, cfg, acc, self.cost_of(cfg), generation)
                w.writerow([r[l] for l in self.layers] + [repr(acc), repr(r["relative_cost"]),
                                                          r["tuned"], generation])
                f.flush()
                if self.bar is not None:
                    self.bar.update(1)

            res, stopped = self.ev.run(self.token, tasks, on_result=on_result, deadline=deadline)
        for c in sorted(res):
            self.cache[c] = (res[c], generation)
        return not stopped

    def close(self):
        try:
            if self.bar is not None:
                self.bar.close()
        finally:
            if self.ev is not None:
                self.ev.close()


def _nsga2(space, runner, cost_of, population, generations, seed, deadline, on_generation):
    """Run (or replay from the cache) NSGA-II; (generations completed, finished)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.problems.static import StaticProblem

    from pymoo.core.duplicate import DuplicateElimination

    class Novel(DuplicateElimination):
        """Offspring must decode to configurations that neither the population nor any
        earlier generation holds (genomes that differ only in unused genes are the same
        configuration). "Earlier" is read from the generation each cached result was first
        asked for, so a replay from the cache sees exactly what the original run saw."""

        def _do(self, pop, other, is_duplicate):
            held = {c for c, (_, g) in runner.cache.items() if g < current[0]}
            if other is not None:
                held.update(space.decode(o.X) for o in other)
            for i, ind in enumerate(pop):
                c = space.decode(ind.X)
                if c in held:
                    is_duplicate[i] = True
                else:
                    held.add(c)
            return is_duplicate

    current = [0]
    problem = Problem(n_var=space.n_var, n_obj=2, xl=space.xl, xu=space.xu, vtype=int)
    # the first population: the seeds, then random genomes drawn from the seed alone
    rng = np.random.default_rng(seed)
    X = [s for s in space.seeds(rng)]
    seen = {space.decode(s) for s in X}
    tries = 0
    while len(X) < population and tries < 100 * population:
        tries += 1
        g = rng.integers(space.xl, space.xu + 1)
        c = space.decode(g)
        if c not in seen:
            seen.add(c)
            X.append(g)
    X = np.array(X, dtype=float)
    algorithm = NSGA2(pop_size=population, sampling=X,
                      crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=Novel())
    rngs = _GlobalRNG(seed)
    with rngs:
        algorithm.setup(problem, seed=seed, verbose=False)
    done = -1
    for gen in range(generations + 1):
        if deadline is not None and time.monotonic() >= deadline:
            return done, False
        current[0] = gen
        with rngs:
            pop = algorithm.ask()
        if pop is None or len(pop) == 0:
            return done, True  # no configuration left that was not evaluated
        configs = [space.decode(xi) for xi in pop.get("X")]
        label = f"search gen {gen}/{generations}"
        if not runner.evaluate(configs, gen, deadline, label):
            return done, False
        F = np.array([[100.0 - runner.cache[c][0], cost_of(c)] for c in configs])
        with rngs:
            Evaluator().eval(StaticProblem(problem, F=F), pop)
            algorithm.tell(infills=pop)
        done = gen
        if on_generation is not None:
            on_generation(gen, len(runner.cache))
    return done, True


class _GlobalRNG:
    """Gives the algorithm a private global NumPy/`random` state (pymoo before 0.6.2 drew from
    the global generators), so that nothing else in the process can shift its draws."""

    def __init__(self, seed):
        import random

        saved = np.random.get_state(), random.getstate()
        np.random.seed(seed)
        random.seed(seed)
        self.mine = np.random.get_state(), random.getstate()
        np.random.set_state(saved[0])
        random.setstate(saved[1])

    def __enter__(self):
        import random

        self.saved = np.random.get_state(), random.getstate()
        np.random.set_state(self.mine[0])
        random.setstate(self.mine[1])

    def __exit__(self, *exc):
        import random

        self.mine = np.random.get_state(), random.getstate()
        np.random.set_state(self.saved[0])
        random.setstate(self.saved[1])


# ------------------------------------------------------------------------------ state
def _write_state(output, doc):
    path = os.path.join(output, "search.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
    return path


def _read_state(folder):
    folder = os.fspath(folder)
    path = os.path.join(folder, "search.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {folder}: no search.json there (not an axkern "
                                f"search folder)")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {folder}: cannot read search.json ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"--resume {folder}: search.json is not an axkern search state")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"--resume {folder}: search.json has version {doc.get('version')}, "
                         f"this axkern reads version {FORMAT_VERSION}")
    return doc


def _check_resume(folder, saved, net, model_hash, desc, data_hash, records):
    if saved["model_sha256"] != model_hash:
        raise ValueError(f"--resume {folder}: that search ran on another model "
                         f"({saved['model']}, sha256 {saved['model_sha256'][:12]}), not on this "
                         f"one ({net.name or 'model'}, sha256 {model_hash[:12]})")
    if saved["data_sha256"] != data_hash:
        raise ValueError(f"--resume {folder}: that search ran on other data ({saved['data']}, "
                         f"sha256 {saved['data_sha256'][:12]}), not on this data ({desc}, "
                         f"sha256 {data_hash[:12]})")
    old = [(m["name"], m["sha256"], m["cost"]) for m in saved["multipliers"]]
    new = [(m["name"], m["sha256"], m["cost"]) for m in records]
    if old != new:
        raise ValueError(f"--resume {folder}: that search chose among other multipliers or "
                         f"costs ({[m[0] for m in old]}), not these ({[m[0] for m in new]})")


# ------------------------------------------------------------------------------ output
def _eval_command(row, layers, cli_specs, added, model, data, limit, batch_size):
    """The ``axkern eval`` command line (shell-quoted) that reproduces ``row``, or None when
    the model, the data or a multiplier cannot be named on a command line."""
    if not all(v is None or isinstance(v, (str, os.PathLike)) for v in (model, data)):
        return None
    parts = ["axkern", "eval"]
    if model is not None:
        parts.append(os.fspath(model))
    assign = []
    for l in layers:
        spec = cli_specs.get(row[l])
        if spec is None:
            if row[l] in added:
                continue   # eval puts the exact multiplier of the others' kind there itself
            return None
        assign.append(f"{l}={spec}")
    tuned = _split_tuned(row["tuned"], layers)
    if not assign or any("," in l or "=" in l for l in layers):
        return None   # (--assign and --tune-layers separate names by commas)
    parts += ["--assign", ",".join(assign)]
    if tuned:
        parts += ["--tune-layers", ",".join(tuned)]
    if data is not None:
        parts += ["--data", os.fspath(data)]
    if limit is not None:
        parts += ["--limit", str(limit)]
    if batch_size is not None:
        parts += ["--batch-size", str(batch_size)]
    return " ".join(shlex.quote(p) for p in parts)


def _cost_label(key):
    return {"power": "power", "pp_bits": "partial-product bits"}.get(key, key)


def format_summary(result):
    """The front as text, with the headline saving within the tolerance."""
    layers = result["layers"]
    total = sum(result["macs"].values())
    ea = result["exact_accuracy"]
    lines = [f"model {result['model']}: float accuracy {result['float_accuracy']:.2f}%, exact "
             f"multiplier {'-' if ea is None else format(ea, '.2f')}% on {result['data']}",
             f"cost: {_cost_label(result['cost_key'])} ({result['exact']} = 1); MACs per "
             "sample: " + ", ".join(f"{l} {n} ({100 * n / total:.1f}%)"
                                    for l, n in result["macs"].items())]
    lines += [f"note: {n}" for n in result["notes"]]
    table = [["rel. cost", "saving", "accuracy", "points lost"] + layers + ["tuned"]]
    for r in result["front"]:
        lost = None if ea is None else ea - r["accuracy"]
        table.append([f"{r['relative_cost']:.4f}", f"{100 * (1 - r['relative_cost']):.1f}%",
                      f"{r['accuracy']:.2f}", "-" if lost is None else f"{lost:.2f}"]
                     + [r[l] for l in layers] + [",".join(_split_tuned(r["tuned"], layers))
                                                 or "none"])
    lines.append(f"Pareto front ({len(result['front'])} of {len(result['evaluations'])} "
                 f"configurations evaluated):")
    lines += _columns(table)
    best, tol = result["best"], result["tolerance"]
    label = _cost_label(result["cost_key"])
    if best is None or best["relative_cost"] >= 1.0:
        lines.append(f"no configuration costs less than the exact one at <= {tol:g} points lost")
    else:
        assign = ", ".join(f"{l}={best[l]}" for l in layers)
        tuned = "" if best["tuned"] == "none" else \
            f" (tuned: {', '.join(_split_tuned(best['tuned'], layers))})"
        lines.append(f"{100 * (1 - best['relative_cost']):.1f}% less {label} at <= {tol:g} points "
                     f"lost: {assign}{tuned}; accuracy {best['accuracy']:.2f}% vs {ea:.2f}% exact")
        if result.get("command"):
            lines.append(f"reproduce: {result['command']}")
    done = result["generations_done"]
    # -1: the budget ran out while the first population was still being evaluated
    stopped = "before the first population was evaluated" if done < 0 else \
        f"after generation {done}"
    status = "finished" if result["finished"] else \
        f"stopped (budget) {stopped}; --resume {result['output']} continues it"
    lines.append(f"{result['samples']} samples, generations {result['generations_done'] + 1} of "
                 f"{result['generations'] + 1} (the first population included), "
                 f"{result['seconds']:.1f} s, {status}")
    return "\n".join(lines)


def _plot(result, path):
    matplotlib = _require("matplotlib", "the search plot")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ev = result["evaluations"]
    ax.scatter([r["relative_cost"] for r in ev], [r["accuracy"] for r in ev], s=8,
               color="0.75", label=f"evaluated ({len(ev)})", zorder=1)
    layers = result["layers"]
    for tuned, marker in ((False, "o"), (True, "^")):
        us = [r for r in result["uniform"] if (r["tuned"] != "none") == tuned]
        if us:
            ax.scatter([r["relative_cost"] for r in us], [r["accuracy"] for r in us], s=36,
                       marker=marker, facecolors="none", edgecolors="tab:blue", zorder=2,
                       label="uniform, " + ("tuned" if tuned else "untuned"))
    us = [r for r in result["uniform"] if r["tuned"] == "none"]
    if us:
        _label_points(ax, [r[layers[0]] for r in us], [r["relative_cost"] for r in us],
                      [r["accuracy"] for r in us])
    fr = result["front"]
    ax.step([r["relative_cost"] for r in fr], [r["accuracy"] for r in fr], where="post",
            color="tab:red", lw=1.2, zorder=3)
    ax.scatter([r["relative_cost"] for r in fr], [r["accuracy"] for r in fr], s=22,
               color="tab:red", zorder=4, label=f"Pareto front ({len(fr)})")
    ea = result["exact_accuracy"]
    if ea is not None:
        ax.axhline(ea, color="gray", ls="--", lw=1, label=f"exact {ea:.2f}%")
        ax.axhline(ea - result["tolerance"], color="gray", ls=":", lw=1,
                   label=f"exact - {result['tolerance']:g} points")
    b = result["best"]
    if b is not None and b["relative_cost"] < 1:
        ax.scatter([b["relative_cost"]], [b["accuracy"]], s=120, marker="*", color="gold",
                   edgecolors="k", zorder=5, label="cheapest within tolerance")
    lo = min([r["accuracy"] for r in fr] + ([ea - 5] if ea is not None else []))
    ax.set_ylim(max(lo - 1, min(r["accuracy"] for r in ev) - 1), None)
    ax.set_xlabel(f"relative cost ({_cost_label(result['cost_key'])}, MAC-weighted; exact = 1)")
    ax.set_ylabel("held-out accuracy %")
    ax.set_title(f"{result['model']}: layer-wise search ({result['samples']} samples)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ command line
def add_parser(subparsers):
    """Register the ``search`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        "search", help="layer-wise multiplier assignment (NSGA-II): accuracy against cost",
        description="Search per-layer multiplier assignments (optionally through at most T "
                    "tiles, with or without weight tuning per layer) with NSGA-II for the "
                    "front of held-out accuracy against MAC-weighted multiplier cost. "
                    "Evaluations run on a Dask cluster (local by default). Writes pareto.csv, "
                    "evaluations.csv, pareto.png and search.json.")
    p.add_argument("--model", metavar="M", help="model file (default: the shipped digits CNN)")
    p.add_argument("--data", metavar="D.npz", help="held-out data: an .npz with arrays x and y")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples")
    p.add_argument("--multipliers", nargs="+", metavar="M",
                   help="shipped names or paths (at least two; commas also separate)")
    p.add_argument("--signedness", choices=["auto", "unsigned", "signed", "all"], default="auto",
                   help="which shipped multipliers the default list takes (auto: the model's)")
    p.add_argument("--tiles", type=int, metavar="T",
                   help="ALWANN tiles: at most T distinct multipliers, each layer on one tile")
    p.add_argument("--tune", choices=["both", "yes", "no"],
                   help="weight tuning: a choice per layer (both, default), always, never")
    p.add_argument("--cost", metavar="KEY",
                   help="metadata key of the cost (default: power, else PP_BITS)")
    p.add_argument("--population", type=int, metavar="N", help="population size (default 32)")
    p.add_argument("--generations", type=int, metavar="N",
                   help="generations after the first population (default 20)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="stop after this much wall-clock time (--resume continues)")
    p.add_argument("--tolerance", type=float, default=0.5, metavar="POINTS",
                   help="accuracy points below exact that the summary allows (default 0.5)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="output folder (default ./axkern-search)")
    p.add_argument("--resume", metavar="DIR", help="continue the stopped search in DIR")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler of an existing cluster (default: a local cluster)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="seconds to wait for --scheduler (default 5)")
    p.add_argument("--batch-size", type=int, metavar="N", help="evaluate in batches")
    p.add_argument("--backend", default="auto", help="kernel backend (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="kernel threads per task (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not draw pareto.png")
    p.set_defaults(func=_cmd_search)
    return p


def _cmd_search(args):
    from .survey import _split_list

    multipliers = _split_list(args.multipliers)
    if args.multipliers is not None and multipliers is None:
        # an empty list (an unset shell variable) must not fall back to the default one
        raise ValueError(f"--multipliers {' '.join(args.multipliers)!r} names no multiplier: "
                         "expected shipped names or paths separated by spaces or commas (leave "
                         "the option out for the default list)")
    try:
        search(model=args.model, multipliers=multipliers, data=args.data,
               limit=args.limit, output=args.output, tiles=args.tiles, tune=args.tune,
               cost=args.cost, population=args.population, generations=args.generations,
               seed=args.seed, budget=args.budget, tolerance=args.tolerance,
               scheduler=args.scheduler, workers=args.workers,
               connect_timeout=args.connect_timeout, resume=args.resume,
               signedness=args.signedness, batch_size=args.batch_size, backend=args.backend,
               num_threads=args.threads, progress=not args.no_progress, plot=not args.no_plot)
    except MissingDependency as e:
        print(f"axkern search: {e}", file=sys.stderr)
        return 2
    return 0


class _CallableModule(type(sys)):
    """``axkern.search(...)`` calls :func:`search`; the module stays importable as
    ``axkern.search``."""

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
