"""``axkern survey`` and ``axkern eval``: which multiplier can a network afford, and where?

:func:`survey` evaluates a :class:`axkern.nn.Sequential` model on held-out data under every
multiplier of a list, with the multiplier in every Conv2D/Dense layer, with and without ALWANN
weight tuning, next to the multiplier's error metrics. It prints a table and writes
``results.csv``, ``results.json`` and ``accuracy_vs_mae.png`` into an output folder. With
``per_layer=True`` it also approximates each layer alone (the other layers use the exact
multiplier of the same bit width and signedness, so only the approximation differs) and draws
a layer x multiplier heatmap (``per_layer.png``, ``per_layer.csv``). ``assign`` evaluates one
mixed configuration instead.

Defaults: the shipped model ``axkern/data/digits_cnn.npz`` (a small CNN trained on
scikit-learn's ``load_digits`` by ``tools/train_digits.py``), its 450 held-out digits, and all
shipped multipliers whose signedness matches the model (``metadata["signed"]``, unsigned when
absent).

Every evaluation quantizes per call (the "tfapprox" mode takes the min/max of the whole batch,
as TFApprox does), and the whole held-out set is one batch unless ``batch_size`` is given, so
the figures are deterministic.

The optional dependencies (scikit-learn for the digits, tqdm for the progress bar, matplotlib
for the plots) come with ``pip install "axkern[survey]"``.
"""
from __future__ import annotations

import csv
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import time

import numpy as np

from . import _json
from .backends import MAX_THREADS
from .conv import QUANT_MODES
from .lut import Multiplier
from .nn import Sequential
from .quant import QuantSpec

__all__ = ["survey", "evaluate", "load_shipped_model", "shipped_model_path", "load_data",
           "add_parser", "MissingDependency", "SURVEY_INSTALL_HINT"]

SURVEY_INSTALL_HINT = 'pip install "axkern[survey]"'
# hardware figures taken from a multiplier's metadata when it has them (EvoApproxLib C files
# carry power, area and delay; the shipped ones carry PP_BITS, the partial-product bits built)
_META_COLUMNS = ("power", "area", "delay", "pp_bits")


class MissingDependency(ImportError):
    """An optional dependency of the survey is not installed."""


def _require(module, purpose, hint=SURVEY_INSTALL_HINT):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingDependency(f"{purpose} needs the optional package "
                                f"'{_DISTRIBUTIONS.get(top, top)}', which is not installed: "
                                f"{hint}") from None


# what pip installs, where it differs from the import name
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


# ------------------------------------------------------------------------------ model and data
def shipped_model_path():
    """Path of the shipped digits CNN (``axkern/data/digits_cnn.npz``)."""
    from importlib.resources import files

    return str(files("axkern") / "data" / "digits_cnn.npz")


def load_shipped_model():
    """The shipped digits CNN as a :class:`axkern.nn.Sequential` (float mode)."""
    return Sequential.load(shipped_model_path())


# What the survey, eval and search need of a model. axkern.nn.Sequential has it; the
# framework adapters wrap their models in an object that has it too:
#   compute_layers             names of the layers that take a multiplier, in order
#   configure(layers=None, *, multiplier=..., quant=..., tune=...)   as Sequential.configure
#   settings()                 {layer: (multiplier name or None, quant, tune)}
#   accuracy(x, y, *, batch_size=None, backend="auto", num_threads=None)   share in 0..1
#   copy()                     an independent copy (settings included); picklable
#   name, metadata             str or None; dict (metadata may name the data set)
# and, for `axkern search` (Sequential counts them itself), optionally:
#   layer_macs(input_shape)    {layer: MACs per sample} for a per-sample input shape (the
#                              search needs it; Sequential, the torch and ONNX models have it)
#   fingerprint()              bytes or str identifying the model's weights and structure, for
#                              the search's --resume check (default: a hash of its pickle)
MODEL_PROTOCOL = ("compute_layers", "configure", "settings", "accuracy", "copy", "metadata")


def _is_torch_module(model):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _is_keras_model(model):
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def _load_model(model):
    if model is None:
        return load_shipped_model()
    if isinstance(model, Sequential):
        return model.copy()
    if isinstance(model, (str, os.PathLike)):
        if os.fspath(model).lower().endswith(".onnx"):
            from .onnx import load_model

            return load_model(model)
        return Sequential.load(model)
    if _is_torch_module(model):
        from .torch import as_survey_model

        return as_survey_model(model)
    if _is_keras_model(model):
        from .keras import as_survey_model as keras_survey_model

        return keras_survey_model(model)
    if all(hasattr(model, a) for a in MODEL_PROTOCOL):
        return model.copy()
    raise TypeError(f"model must be an axkern.nn.Sequential, a torch.nn.Module, a keras.Model, a "
                    f"path to a model .npz or .onnx, or None, got {type(model).__name__}")


class _NoDataSet(ValueError):
    """No data was given and the model's metadata names no data set axkern can load (the
    command line rewords it to name --data)."""


def load_data(model, data=None, limit=None):
    """Held-out inputs and labels for ``model``.

    Parameters
    ----------
    model : Sequential
    data : None, path or (x, y)
        None uses the data set the model's metadata names (the shipped model: scikit-learn's
        digits at the stored held-out indices, pixels scaled by ``input_scale``). A path names
        an ``.npz`` with arrays ``x`` (N, H, W, C) and ``y`` (N,).
    limit : int, optional
        Keep only the first ``limit`` samples (for quick checks).

    Returns
    -------
    x : ndarray of float32
    y : ndarray of int64
    description : str
    """
    if data is None:
        meta = model.metadata
        if meta.get("dataset") != "sklearn.datasets.load_digits":
            raise _NoDataSet("the model's metadata names no data set axkern can load: give the "
                             "held-out data (an .npz with arrays 'x' and 'y', or (x, y))")
        datasets = _require("sklearn.datasets", "loading the digits data")
        digits = datasets.load_digits()
        try:
            idx = np.asarray(meta.get("test_indices", []), dtype=np.int64)
        except (TypeError, ValueError, OverflowError):   # strings, ragged lists, huge ints
            idx = np.zeros(0, np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= len(digits.target):
            raise ValueError("the model's metadata holds no valid 'test_indices' for the digits")
        try:
            scale = float(meta.get("input_scale", 1.0 / 16.0))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"the model's metadata holds an invalid 'input_scale' "
                             f"{meta.get('input_scale')!r}: expected a number") from None
        x = (digits.images[idx] * scale).astype(np.float32)
        x, y = x[..., None], digits.target[idx].astype(np.int64)
        desc = f"{len(y)} held-out digits (scikit-learn load_digits)"
    elif isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file not found: {path}")
        from ._npyio import read_npz

        # checked reading: damaged or hostile files are a ValueError naming the file
        f = read_npz(path, what="held-out data: an .npz with arrays 'x' (inputs) and 'y' "
                                "(labels)", keys=("x", "y"))
        x, y = f["x"], f["y"]
        desc = f"{np.size(y)} samples from {os.path.basename(path)}"
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise TypeError("data must be None, a path to an .npz, or a pair (x, y)") from None
        desc = f"{np.size(y)} given samples"
    with np.errstate(over="ignore"):   # values beyond float32 are reported just below
        x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) \
            or x.shape[0] != y.shape[0]:
        where = f"{os.fspath(data)}: " if isinstance(data, (str, os.PathLike)) else ""
        raise ValueError(f"{where}labels must be integers, one per sample: x has shape "
                         f"{x.shape}, y has shape {y.shape} and dtype {y.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{desc}: the inputs x hold NaN, infinite or out-of-float32-range "
                         "values: expected finite numbers")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        x, y = x[:limit], y[:limit]
        desc += f", first {len(y)}"
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    return x, y.astype(np.int64), desc


def _check_label_range(net, x, y, batch_size=None):
    """Refuse labels the model cannot predict: an accuracy is the share of samples whose
    argmax is the label, so a label outside 0 .. C - 1 (C scores per sample) scores 0 under
    every multiplier, and a survey of such data would rank nothing. A float forward pass of
    one batch gives C (the first ``batch_size`` samples: a model exported with a fixed batch
    runs no other size); a model without ``forward``, or whose probe fails, is checked for
    negative labels only (its float accuracy ran already)."""
    if y.min() < 0:
        raise ValueError(f"labels must be class indices >= 0, got {int(y.min())}")
    forward = getattr(net, "forward", None)
    if forward is None:
        return
    try:
        out = forward(x[:batch_size or 1])
    except Exception:   # (the check is a courtesy; the accuracy itself ran)
        return
    classes = int(np.prod(np.shape(out)[1:]))
    if int(y.max()) >= classes:
        raise ValueError(f"labels go up to {int(y.max())}, but the model gives {classes} scores "
                         f"per sample: expected class indices 0 .. {classes - 1}")


# ------------------------------------------------------------------------------ multipliers
def _load_multiplier(spec, signed=None):
    if isinstance(spec, Multiplier):
        return spec
    from .library import load_multiplier

    return load_multiplier(spec, signed=signed)


def _default_multipliers(signedness):
    from .library import list_multipliers

    out = []
    names = list_multipliers() if signedness == "all" else list_multipliers(
        signed=signedness == "signed")
    for item in names:
        # list_multipliers may give names, Multipliers or info records; all name a multiplier
        if isinstance(item, Multiplier):
            m = item
        else:
            name = item if isinstance(item, str) else (
                item.get("name") if isinstance(item, dict) else getattr(item, "name", None))
            m = _load_multiplier(name)
        if signedness == "all" or m.signed == (signedness == "signed"):
            out.append(m)
    return out


def _resolve_multipliers(multipliers, signedness, explicit=None):
    if multipliers is None:
        ms = _default_multipliers(signedness)
        if not ms:
            raise ValueError(f"no shipped {signedness} multipliers were found")
        return ms
    if isinstance(multipliers, (str, os.PathLike, Multiplier)):
        multipliers = [multipliers]
    ms = [_load_multiplier(s, explicit) for s in multipliers]
    if not ms:
        raise ValueError("the list of multipliers is empty")
    names = [m.name for m in ms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"multipliers named {dup} appear more than once: names must be unique")
    return ms


def _meta_number(value):
    m = re.match(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", str(value))
    if not m:
        return None
    v = float(m.group(1))
    return int(v) if re.fullmatch(r"[-+]?\d+", m.group(1)) else v


# EvoApproxLib's synthesis figures (45 nm PDK): they take precedence over a plain key
_PDK45_KEYS = {"power": "pdk45_pwr", "area": "pdk45_area", "delay": "pdk45_delay"}


def _meta_columns(m):
    """Power, area, delay and PP_BITS from the multiplier's metadata (numbers, units dropped).

    The one place that reads these figures: the survey's columns and the search's cost
    (:func:`axkern.search.multiplier_cost`) both come from here, so they agree.

    Keys are matched without regard to case or surrounding spaces. For each column the first
    of these that holds a number wins: EvoApproxLib's ``PDK45_PWR`` / ``PDK45_AREA`` /
    ``PDK45_DELAY``, the column's own name (``power``), then keys that start with it followed
    by ``_`` or a space (``power_mw``, ``Power (45)``), in the metadata's order.

    Parameters
    ----------
    m : Multiplier

    Returns
    -------
    dict
        ``{column: number}`` for the columns found (int for an integer value).
    """
    meta = {}
    for key, value in m.metadata.items():
        meta.setdefault(str(key).strip().lower(), value)
    out = {}
    for col in _META_COLUMNS:
        candidates = [_PDK45_KEYS.get(col), col]
        candidates += [k for k in meta if k.startswith(col + "_") or k.startswith(col + " ")]
        for k in candidates:
            num = _meta_number(meta[k]) if k in meta else None
            if num is not None:
                out[col] = num
                break
    return out


def _exact_like(m):
    return Multiplier.exact(m.bits, m.signed)


# ------------------------------------------------------------------------------ evaluation
# Worker state: set once per process (by the pool initializer or directly), so that tasks
# carry only small indices and settings.
_STATE = {}


def _init_state(model, x, y, multipliers, backend, num_threads, batch_size):
    _STATE.update(model=model, x=x, y=y, multipliers=multipliers, backend=backend,
                  num_threads=num_threads, batch_size=batch_size)


def _init_state_from_file(path):
    with open(path, "rb") as f:
        _init_state(*pickle.load(f))  # written by this package's parent process, see below


def _run_task(task, state=None):
    """Accuracy (percent) of one configuration.

    ``task = (key, {layer: (index into the multiplier pool or None, tune)})``; layers not
    named run in float. ``state`` is a dict as ``_STATE`` (default: this process's).
    """
    key, assignment = task
    st = _STATE if state is None else state
    model = st["model"]
    model.configure(multiplier=None, tune=False)
    for layer, (idx, tune) in assignment.items():
        mult = None if idx is None else st["multipliers"][idx]
        model.configure([layer], multiplier=mult, tune=bool(tune) and mult is not None)
    acc = model.accuracy(st["x"], st["y"], batch_size=st["batch_size"], backend=st["backend"],
                         num_threads=st["num_threads"])
    return key, 100.0 * acc


def _evaluate_all(tasks, state_args, jobs, progress, desc, scheduler=None):
    """Run tasks in this process, in a pool of ``jobs`` processes or on the Dask cluster at
    ``scheduler``; {key: accuracy}."""
    results = {}
    if not tasks:
        return results
    bar = None
    if progress:
        tqdm = _require("tqdm", "the progress bar").tqdm
        bar = tqdm(total=len(tasks), desc=desc, unit="eval", file=sys.stderr, leave=True)
    try:
        if scheduler is not None:
            import uuid

            from .cluster import Evaluator

            names = ("model", "x", "y", "multipliers", "backend", "num_threads", "batch_size")
            with Evaluator(scheduler) as ev:
                token = ev.broadcast(uuid.uuid4().hex, dict(zip(names, state_args)))
                res, _ = ev.run(token, tasks, on_result=None if bar is None else
                                (lambda k, a: bar.update(1)))
            results.update(res)
        elif jobs <= 1:
            _init_state(*state_args)
            for t in tasks:
                k, acc = _run_task(t)
                results[k] = acc
                if bar is not None:
                    bar.update(1)
        else:
            _evaluate_in_workers(tasks, state_args, jobs, results, bar)
    finally:
        if bar is not None:
            bar.close()
    return results


_GUARD_HINT = ('the worker processes are spawned and import the main script again, so a '
               'script that calls survey(..., jobs=N) must do it under '
               '`if __name__ == "__main__":` (or use jobs=1)')


def _check_not_bootstrapping():
    """Refuse to start workers from a spawned worker that is still importing the main script
    (the script lacks the ``__main__`` guard): fail here rather than spawn recursively."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(f"survey(jobs>1) was called while a worker process was starting: "
                           f"{_GUARD_HINT}")


def _evaluate_in_workers(tasks, state_args, jobs, results, bar):
    # A pool that notices a dead worker (concurrent.futures raises BrokenProcessPool) instead
    # of multiprocessing.Pool, which silently replaces it and waits forever for its task.
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: forking a process whose OpenMP runtime is live can hang.
    ctx = mp.get_context("spawn")
    # The state (model, data, tables: megabytes) goes through a private file, not through the
    # spawn pipe: the parent writes a worker's arguments into that pipe while still holding
    # its read end, so a worker dying before reading them all would block the parent forever.
    tmp = tempfile.mkdtemp(prefix="axkern-survey-")
    state_file = os.path.join(tmp, "state.pickle")
    with open(state_file, "wb") as f:
        pickle.dump(state_args, f, protocol=pickle.HIGHEST_PROTOCOL)
    ex = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_state_from_file,
                             initargs=(state_file,))
    done = 0
    ok = False
    try:
        pending = {ex.submit(_run_task, t) for t in tasks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                k, acc = f.result()
                results[k] = acc
                done += 1
                if bar is not None:
                    bar.update(1)
        ok = True
    except BrokenProcessPool:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        msg = (f"a survey worker process died unexpectedly after {done} of {len(tasks)} "
               "evaluations (killed, out of memory, or a crash; its error output, if any, is "
               "above)")
        if done == 0 and main_file:
            msg += f". If it died while starting: {_GUARD_HINT} (main script: {main_file})"
        raise RuntimeError(msg) from None
    finally:
        if not ok:
            # don't wait for the evaluations still running: stop the workers
            for p in list((getattr(ex, "_processes", None) or {}).values()):
                try:
                    p.terminate()
                except (OSError, AttributeError):
                    pass
        ex.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate(model=None, multiplier=None, *, tune=False, assign=None, data=None, limit=None,
             quant=None, batch_size=None, backend="auto", num_threads=None, signed=None):
    """Held-out accuracy (percent) of one configuration.

    Parameters
    ----------
    model : Sequential, path or None
        None: the shipped digits CNN.
    multiplier : Multiplier, name, path or None
        Used in every Conv2D/Dense layer; None evaluates the float model.
    tune : bool or list of str
        ALWANN weight tuning in the approximated layers: True tunes every layer that computes
        through ``multiplier`` or an ``assign`` entry; a list of layer names tunes only those
        (as in the ``tuned`` column of ``axkern search``'s files).
    assign : dict or str, optional
        ``{layer: multiplier}`` (or ``"conv1=m1,dense1=m2"``) for a mixed configuration; layers
        not named use ``multiplier`` (tuned when ``tune`` is True), or, when it is None, the
        exact multiplier of the first assigned multiplier's bit width and signedness, untuned
        (as :func:`survey` does).
    data, limit
        As for :func:`load_data`.
    quant : optional
        Quantization mode for every Conv2D/Dense layer (default: the model's, "auto").
    signed : bool, optional
        How to read the multiplier files given by path (see
        :func:`axkern.library.load_multiplier`); None lets each file say.

    Returns
    -------
    dict
        ``accuracy`` (percent), ``float_accuracy`` (percent), ``samples``, ``data`` and the
        per-layer ``settings``.
    """
    # checked here: a float evaluation never resolves it
    if (isinstance(quant, str) and quant not in QUANT_MODES) or not (
            quant is None or isinstance(quant, (str, tuple, list, dict, QuantSpec))):
        raise ValueError(f"unknown quant {quant!r}: expected one of {', '.join(QUANT_MODES)}, a "
                         f"QuantSpec or (input, weight) QuantParams")
    net = _load_model(model)
    x, y, desc = load_data(net, data, limit)
    # a model may arrive with multipliers set (the copy keeps them): the float figure is the
    # float model's, as in survey() and search()
    net.configure(multiplier=None, tune=False)
    float_acc = 100.0 * net.accuracy(x, y, batch_size=batch_size)
    _check_label_range(net, x, y, batch_size)   # (after: a wrong shape is reported for x)
    if quant is not None:
        net.configure(quant=quant)
    if multiplier is not None:
        multiplier = _load_multiplier(multiplier, signed)
    if not isinstance(tune, (bool, np.bool_, int, np.integer)) and tune is not None:
        tuned = [tune] if isinstance(tune, str) else list(tune)
        bad = [l for l in tuned if l not in net.compute_layers]
        if bad:
            raise ValueError(f"tune names {bad}, which are not Conv2D/Dense layers of the model: "
                             f"expected some of {net.compute_layers}")
        tune = set(tuned)
    if assign:
        mapping = _parse_assign(assign, net, signed)
        # the layers not named run through the user's multiplier, tuned like every other
        # approximated layer; the exact filler chosen here needs no tuning (as in survey())
        filler_tune = not isinstance(tune, set) and bool(tune) and multiplier is not None
        if multiplier is None:
            first = next((m for m in mapping.values() if m is not None), None)
            multiplier = None if first is None else _exact_like(first)
        net.configure(multiplier=multiplier, tune=filler_tune)
        for layer, m in mapping.items():
            net.configure([layer], multiplier=m, tune=_tunes(tune, layer) and m is not None)
        if isinstance(tune, set):
            for layer in tune - set(mapping):
                net.configure([layer], tune=multiplier is not None)
    elif isinstance(tune, set):
        net.configure(multiplier=multiplier, tune=False)
        if tune:
            net.configure(sorted(tune), tune=multiplier is not None)
    else:
        net.configure(multiplier=multiplier, tune=bool(tune) and multiplier is not None)
    acc = 100.0 * net.accuracy(x, y, batch_size=batch_size, backend=backend,
                               num_threads=num_threads)
    return {"accuracy": acc, "float_accuracy": float_acc, "samples": int(len(y)), "data": desc,
            "settings": {k: {"multiplier": v[0], "quant": v[1], "tune": v[2]}
                         for k, v in net.settings().items()}}


def _tunes(tune, layer):
    return layer in tune if isinstance(tune, set) else bool(tune)


def _parse_assign(assign, model, signed=None):
    """{layer: Multiplier} from a dict or a 'layer=mult,layer=mult' string."""
    if isinstance(assign, str):
        pairs = {}
        for part in assign.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ValueError(f"--assign entry {part!r} is not of the form layer=multiplier")
            layer, mult = (s.strip() for s in part.split("=", 1))
            if not layer or not mult:
                raise ValueError(f"--assign entry {part!r} is not of the form layer=multiplier")
            if layer in pairs:
                raise ValueError(f"--assign names layer {layer!r} twice")
            pairs[layer] = mult
        assign = pairs
    if not isinstance(assign, dict) or not assign:
        raise ValueError("assign must be a non-empty mapping layer -> multiplier")
    out = {}
    for layer, m in assign.items():
        if layer not in model.compute_layers:
            raise ValueError(f"--assign names layer {layer!r}, which is not a Conv2D/Dense layer of "
                             f"the model: expected one of {model.compute_layers}")
        out[layer] = None if m is None or (isinstance(m, str) and m.lower() == "float") \
            else _load_multiplier(m, signed)
    return out


# ------------------------------------------------------------------------------ the survey
def survey(model=None, multipliers=None, *, per_layer=False, assign=None, jobs=1,
           output="axkern-survey", tune="both", data=None, limit=None, signedness="auto",
           batch_size=None, backend="auto", num_threads=None, progress=True, plot=True,
           verbose=True, scheduler=None):
    """Accuracy of a model under each multiplier, tuned and untuned, with the error metrics.

    Parameters
    ----------
    model : Sequential, path or None
        None: the shipped digits CNN.
    multipliers : list of (Multiplier, shipped name or path), optional
        Default: all shipped multipliers of the matching signedness.
    per_layer : bool
        Also approximate each Conv2D/Dense layer alone (the others exact): a layer x multiplier
        accuracy matrix, written to ``per_layer.csv`` and ``per_layer.png``.
    assign : dict or str, optional
        One mixed configuration ``{layer: multiplier}`` (or ``"conv1=m1,dense1=m2"``); layers
        not named use the exact multiplier of the first assigned multiplier's kind. When given,
        only this configuration is evaluated (``multipliers`` and ``per_layer`` are not used).
    jobs : int
        Evaluate in this many processes (each gets ``cpu_count // jobs`` kernel threads).
        They are spawned and import the main script again: a script must call ``survey``
        under ``if __name__ == "__main__":``. A worker that dies raises RuntimeError.
    output : str or None
        Folder for ``results.csv``, ``results.json`` and the PNGs; None writes nothing. It is
        created before the evaluation starts (a path that cannot be a folder fails at once);
        if writing the files fails all the same, the table is printed (when ``verbose``)
        before the error is raised. Files of those names that an earlier run left there and
        this run does not write (``per_layer.*`` without ``per_layer``, the plots without
        ``plot``) are removed; nothing else in the folder is touched.
    tune : {"both", True, False}
        Evaluate with weight tuning, without, or both (the default).
    data, limit
        Held-out data (see :func:`load_data`).
    signedness : {"auto", "unsigned", "signed", "all"}
        Which shipped multipliers the default list takes; "auto" follows the model's
        ``metadata["signed"]`` (unsigned when absent). "signed" and "unsigned" also say how to
        read the table files given in ``multipliers`` and ``assign`` (``signed=`` of
        :func:`axkern.library.load_multiplier`); "auto" and "all" let each file say.
    batch_size, backend, num_threads
        Passed to the model's forward pass.
    progress : bool
        Show a tqdm progress bar.
    plot : bool
        Write the PNG plots (needs matplotlib).
    verbose : bool
        Print the table.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``): evaluate on that cluster instead
        of local processes (``jobs`` is then not used; kernels run ``num_threads`` threads
        per task, default 1). Needs ``pip install "axkern[search]"``.

    Returns
    -------
    dict
        ``rows`` (one dict per multiplier, accuracies in percent), ``float_accuracy``,
        ``per_layer`` (or None), ``assign`` (or None), ``samples``, ``seconds``, ``files``.
    """
    t0 = time.perf_counter()
    if tune not in ("both", True, False):
        raise ValueError(f"tune must be 'both', True or False, got {tune!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if jobs > 1:
        _check_not_bootstrapping()
    if jobs > MAX_THREADS:   # each job is a process: refuse what no machine can start
        raise ValueError(f"jobs={jobs} is too many: expected at most {MAX_THREADS} "
                         "(four per core, at least 16)")
    if assign is not None and (per_layer or multipliers is not None):
        raise ValueError("assign evaluates one mixed configuration: it cannot be combined with "
                         "per_layer or a list of multipliers")
    if signedness not in ("auto", "unsigned", "signed", "all"):
        raise ValueError(f"signedness must be 'auto', 'unsigned', 'signed' or 'all', got {signedness!r}")
    if progress:
        _require("tqdm", "the progress bar")
    if plot and output is not None:
        _require("matplotlib", "plotting the survey")
    net = _load_model(model)
    if not net.compute_layers:
        raise ValueError("the model has no Conv2D or Dense layer to approximate")
    x, y, desc = load_data(net, data, limit)
    explicit = {"signed": True, "unsigned": False}.get(signedness)   # for the files given
    if signedness == "auto":
        signedness = "signed" if net.metadata.get("signed", False) else "unsigned"
    tunes = [False, True] if tune == "both" else [bool(tune)]
    layers = net.compute_layers
    net.configure(multiplier=None, tune=False)
    float_acc = 100.0 * net.accuracy(x, y, batch_size=batch_size)
    _check_label_range(net, x, y, batch_size)   # (after: a wrong shape is reported for x)
    if num_threads is None and scheduler is not None:
        num_threads = 1
    if num_threads is None and jobs > 1:
        num_threads = max(1, (os.cpu_count() or 1) // jobs)

    if assign is not None:
        mapping = _parse_assign(assign, net, explicit)
        first = next((m for m in mapping.values() if m is not None), None)
        exact = _exact_like(first) if first is not None else None
        mults = [exact] + [m for m in mapping.values() if m is not None]
        index = {id(m): i for i, m in enumerate(mults)}
        tasks = []
        for t in tunes:
            # assigned layers are tuned when asked; the exact filler layers never need it
            config = {l: ((index[id(mapping[l])], t) if mapping.get(l) is not None else
                          ((None if l in mapping or exact is None else 0), False)) for l in layers}
            tasks.append((("assign", t), config))
        state = (net, x, y, mults, backend, num_threads, batch_size)
        _prepare_output(output)
        res = _evaluate_all(tasks, state, jobs, progress, "assign", scheduler)
        label = ",".join(f"{l}={'float' if m is None else m.name}" for l, m in mapping.items())
        row = {"multiplier": label, "accuracy": res.get(("assign", False)),
               "accuracy_tuned": res.get(("assign", True))}
        result = {"model": net.name or "model", "data": desc, "samples": int(len(y)),
                  "float_accuracy": float_acc, "rows": [row], "per_layer": None,
                  "assign": {"mapping": {l: (None if m is None else m.name) for l, m in mapping.items()},
                             "other_layers": None if exact is None else exact.name,
                             "accuracy": row["accuracy"], "accuracy_tuned": row["accuracy_tuned"]}}
        return _finish(result, output, plot, verbose, t0)

    mults = _resolve_multipliers(multipliers, signedness, explicit)
    mets = {id(m): _metrics_dict(m) for m in mults}
    # rows, matrices and plots all run from the most accurate multiplier to the least
    mults.sort(key=lambda m: (mets[id(m)]["mae_pct"], m.name))
    exacts = {}
    for m in mults:
        exacts.setdefault((m.bits, m.signed), _exact_like(m))
    pool = list(mults) + list(exacts.values())
    exact_idx = {k: len(mults) + i for i, k in enumerate(exacts)}
    tasks = []
    for i, m in enumerate(mults):
        for t in tunes:
            tasks.append((("all", i, t), {l: (i, t) for l in layers}))
    if per_layer:
        for i, m in enumerate(mults):
            for layer in layers:
                base = {l: (exact_idx[(m.bits, m.signed)], False) for l in layers}
                for t in tunes:
                    cfg = dict(base)
                    cfg[layer] = (i, t)
                    tasks.append((("layer", i, layer, t), cfg))
    state = (net, x, y, pool, backend, num_threads, batch_size)
    _prepare_output(output)
    res = _evaluate_all(tasks, state, jobs, progress, "survey", scheduler)

    rows = []
    for i, m in enumerate(mults):
        met = mets[id(m)]
        row = {"multiplier": m.name, "bits": m.bits, "signed": m.signed,
               "mae_pct": met["mae_pct"], "wce_pct": met["wce_pct"], "ep_pct": met["ep_pct"],
               "mre_pct": met["mre_pct"], "bias": met["bias"]}
        row.update(_meta_columns(m))
        row["accuracy"] = res.get(("all", i, False))
        row["accuracy_tuned"] = res.get(("all", i, True))
        rows.append(row)
    per = None
    if per_layer:
        per = {"layers": layers, "multipliers": [m.name for m in mults],
               "accuracy": [[res.get(("layer", i, l, False)) for l in layers] for i in range(len(mults))],
               "accuracy_tuned": [[res.get(("layer", i, l, True)) for l in layers] for i in range(len(mults))],
               "other_layers": "exact multiplier of the same bit width and signedness"}
    result = {"model": net.name or "model", "data": desc, "samples": int(len(y)), "float_accuracy": float_acc,
              "rows": rows, "per_layer": per, "assign": None}
    return _finish(result, output, plot, verbose, t0)


def _metrics_dict(m):
    from .metrics import metrics

    return metrics(m).to_dict()


def _prepare_output(output):
    """Create the output folder before the (long) evaluation, so a path that cannot be one
    fails at once instead of after it."""
    if output is None:
        return
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        why = e.strerror or str(e)
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            why += " (a file is in the way)"
        raise type(e)(f"cannot create the output folder {output}: {why}") from None


# every file a survey may write: an earlier run's files that this run did not write are
# removed, so that the folder never mixes two runs (nothing else in it is touched)
_OUTPUT_FILES = ("results.csv", "results.json", "accuracy_vs_mae.png", "per_layer.csv",
                 "per_layer.png")


def _remove_stale(output, written):
    """Delete the survey files in ``output`` that are not among ``written`` (left by an
    earlier run with other options, e.g. ``--per-layer`` or plots)."""
    keep = {os.path.normcase(os.path.abspath(f)) for f in written}
    for name in _OUTPUT_FILES:
        path = os.path.join(output, name)
        if os.path.normcase(os.path.abspath(path)) not in keep and os.path.isfile(path):
            os.remove(path)


def _finish(result, output, plot, verbose, t0):
    result["seconds"] = time.perf_counter() - t0
    result["files"] = []
    try:
        if output is not None:
            _prepare_output(output)
            result["files"] += _write_tables(result, output)
            if plot:
                result["files"] += _write_plots(result, output)
            _remove_stale(output, result["files"])
    except Exception:
        # the evaluation took long: its results are shown even though they cannot be saved
        if verbose:
            result["seconds"] = time.perf_counter() - t0
            print(format_table(result))
        raise
    result["seconds"] = time.perf_counter() - t0
    if verbose:
        print(format_table(result))
        for f in result["files"]:
            print(f"wrote {f}")
    return result


# ------------------------------------------------------------------------------ output
def _fmt(v, spec=".2f"):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def format_table(result):
    """The survey table as text (accuracies in percent)."""
    lines = [f"model {result['model']}: float accuracy {result['float_accuracy']:.2f}% on "
             f"{result['data']}"]
    rows = result["rows"]
    if result.get("assign"):
        a = result["assign"]
        other = a["other_layers"] or "float"
        lines.append(f"mixed configuration {rows[0]['multiplier']} (other layers: {other})")
        lines.append(f"  accuracy {_fmt(a['accuracy'])}%   tuned {_fmt(a['accuracy_tuned'])}%")
    else:
        extra = [c for c in _META_COLUMNS if any(c in r for r in rows)]
        head = ["multiplier", "MAE%", "WCE%", "EP%"] + extra + ["acc%", "tuned%", "drop", "tuned drop"]
        table = [head]
        for r in sorted(rows, key=lambda r: (r["mae_pct"], r["multiplier"])):
            fa = result["float_accuracy"]
            drop = None if r["accuracy"] is None else r["accuracy"] - fa
            tdrop = None if r["accuracy_tuned"] is None else r["accuracy_tuned"] - fa
            table.append([r["multiplier"], _fmt(r["mae_pct"], ".4f"), _fmt(r["wce_pct"], ".3f"),
                          _fmt(r["ep_pct"], ".1f")] + [_fmt(r.get(c), ".4g") for c in extra] +
                         [_fmt(r["accuracy"]), _fmt(r["accuracy_tuned"]), _fmt(drop, "+.2f"),
                          _fmt(tdrop, "+.2f")])
        lines += _columns(table)
        per = result.get("per_layer")
        if per:
            has_u = any(v is not None for row in per["accuracy"] for v in row)
            has_t = any(v is not None for row in per["accuracy_tuned"] for v in row)
            # the header names exactly what the cells hold (--tune yes: the tuned figure only)
            both = has_u and has_t
            lines.append("")
            lines.append("per layer (that layer approximated, the others exact), accuracy %"
                         + (" untuned / tuned" if both else " tuned" if has_t else ""))
            table = [["multiplier"] + per["layers"]]
            for name, accs, taccs in zip(per["multipliers"], per["accuracy"], per["accuracy_tuned"]):
                table.append([name] + [f"{_fmt(a)} / {_fmt(t)}" if both else
                                       _fmt(t) if has_t else _fmt(a)
                                       for a, t in zip(accs, taccs)])
            lines += _columns(table)
    lines.append(f"{result['samples']} samples, {result['seconds']:.1f} s")
    return "\n".join(lines)


def _columns(table):
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    out = []
    for j, r in enumerate(table):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _write_tables(result, out):
    rows = result["rows"]
    cols = ["multiplier"]
    if not result.get("assign"):
        cols += ["bits", "signed", "mae_pct", "wce_pct", "ep_pct", "mre_pct", "bias"]
        cols += [c for c in _META_COLUMNS if any(c in r for r in rows)]
    cols += ["accuracy", "accuracy_tuned", "float_accuracy"]
    files = []
    path = os.path.join(out, "results.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            vals = dict(r, float_accuracy=result["float_accuracy"])
            w.writerow(["" if vals.get(c) is None else vals.get(c) for c in cols])
    files.append(path)
    per = result.get("per_layer")
    if per:
        path = os.path.join(out, "per_layer.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["multiplier", "tuned"] + per["layers"])
            for key, tuned in (("accuracy", False), ("accuracy_tuned", True)):
                for name, accs in zip(per["multipliers"], per[key]):
                    if all(a is None for a in accs):
                        continue
                    w.writerow([name, tuned] + ["" if a is None else a for a in accs])
        files.append(path)
    path = os.path.join(out, "results.json")
    doc = {k: v for k, v in result.items() if k != "files"}
    with open(path, "w", encoding="utf-8") as f:
        _json.dump(doc, f, indent=2)   # strict JSON: non-finite values as null
    files.append(path)
    return files


def _boxes_overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_points(ax, names, xs, ys, obstacles=()):
    """Name each point without covering another label, a marker or the legend.

    Labels are measured with the figure's renderer; each one takes the nearest free spot
    around its point (right, left, above, below, then the diagonals, further out step by step),
    with a thin leader line when it had to move away. The axes layout must be final.
    """
    fig = ax.figure
    ax.autoscale_view()   # the data limits must be final before points become pixels
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    pts = ax.transData.transform(np.column_stack([xs, ys]).astype(float))
    # markers (all of them, tuned ones included) and the legend are obstacles too
    r = 6.0 * px_per_pt          # a marker (s=40: about 6 pt across) plus a margin
    pad = 1.5 * px_per_pt        # keeps neighbouring labels from touching
    blocked = [(x - r, y - r, x + r, y + r) for x, y in
               ax.transData.transform(np.asarray(obstacles, dtype=float).reshape(-1, 2))]
    legend = ax.get_legend()
    if legend is not None:
        b = legend.get_window_extent(renderer)
        blocked.append((b.x0, b.y0, b.x1, b.y1))
    directions = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
                  (1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1),
                  (-0.5, -1)]
    # the most crowded points choose first, while the space next to them is still free
    crowd = [int(np.sum(np.hypot(*(pts - p).T) < 60 * px_per_pt)) for p in pts]
    order = sorted(range(len(names)), key=lambda i: (-crowd[i], -ys[i], xs[i]))
    for i in order:
        text = ax.text(0, 0, names[i], fontsize=6)
        ext = text.get_window_extent(renderer)
        text.remove()
        w, h = ext.width, ext.height
        (x, y), best = pts[i], None
        for dist in (4, 9, 15, 22, 30, 40, 52, 66, 82, 100, 120):
            for dx, dy in directions:
                ox, oy = dx * dist * px_per_pt, dy * dist * px_per_pt
                # the label sits on the side of the point it moved to
                x0 = x + ox if dx > 0 else (x + ox - w if dx < 0 else x + ox - w / 2)
                y0 = y + oy if dy > 0 else (y + oy - h if dy < 0 else y + oy - h / 2)
                box = (x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad)
                if not (frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1]
                        and box[3] <= frame.y1):
                    continue
                if not any(_boxes_overlap(box, b) for b in blocked):
                    best = (box, dist)
                    break
            if best is not None:
                break
        if best is None:  # nowhere free: keep it next to its point
            best = ((x + 4 * px_per_pt, y - h / 2, x + 4 * px_per_pt + w, y + h / 2), 4)
        box, dist = best
        blocked.append(box)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        ax.annotate(names[i], (xs[i], ys[i]),
                    xytext=((cx - x) / px_per_pt, (cy - y) / px_per_pt),
                    textcoords="offset points", fontsize=6, ha="center", va="center",
                    arrowprops=None if dist < 9 else
                    dict(arrowstyle="-", lw=0.4, color="gray", shrinkA=1, shrinkB=3))


def _write_plots(result, out):
    matplotlib = _require("matplotlib", "plotting the survey")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    files = []
    rows = result["rows"]
    if not result.get("assign") and rows:
        fig, ax = plt.subplots(figsize=(9, 6))
        mae = np.array([r["mae_pct"] for r in rows], dtype=float)
        positive = mae[mae > 0]
        floor = positive.min() / 3 if positive.size else 1e-4
        xs = np.where(mae > 0, mae, floor)  # exact multipliers sit at the left edge
        for key, marker, label in (("accuracy", "o", "untuned"), ("accuracy_tuned", "^", "tuned")):
            ys = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
            if np.all(np.isnan(ys)):
                continue
            ax.scatter(xs, ys, marker=marker, s=40, alpha=0.8, label=label)
        for r, xv in zip(rows, xs):
            if r["accuracy"] is not None and r["accuracy_tuned"] is not None:
                # a thin line from untuned to tuned shows what tuning recovers (or loses)
                ax.plot([xv, xv], [r["accuracy"], r["accuracy_tuned"]], color="gray", lw=0.6,
                        alpha=0.6, zorder=0)
        ax.axhline(result["float_accuracy"], color="gray", ls="--", lw=1,
                   label=f"float {result['float_accuracy']:.2f}%")
        ax.set_xscale("log")
        ax.set_xlabel("MAE % (log scale; exact multipliers at the left edge)")
        ax.set_ylabel("held-out accuracy %")
        ax.set_title(f"{result['model']}: accuracy vs multiplier error ({result['samples']} samples)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left")
        ax.margins(x=0.08, y=0.06)
        fig.tight_layout()   # before the labels: their placement needs the final axes
        markers = [(xv, r[k]) for r, xv in zip(rows, xs) for k in ("accuracy", "accuracy_tuned")
                   if r[k] is not None]
        _label_points(ax, [r["multiplier"] for r in rows], xs,
                      [r["accuracy"] if r["accuracy"] is not None else r["accuracy_tuned"]
                       for r in rows], obstacles=markers)
        path = os.path.join(out, "accuracy_vs_mae.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(path)
    per = result.get("per_layer")
    if per:
        mats = [("untuned", per["accuracy"]), ("tuned", per["accuracy_tuned"])]
        mats = [(t, np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float))
                for t, m in mats if any(v is not None for row in m for v in row)]
        # constrained layout keeps the suptitle, the subplot titles and the colorbar apart
        fig, axes = plt.subplots(1, len(mats), squeeze=False, layout="constrained", figsize=(
            2.5 + len(mats) * (1.0 + 0.8 * len(per["layers"])), 1.8 + 0.3 * len(per["multipliers"])))
        vmin = np.nanmin([np.nanmin(m) for _, m in mats])
        vmax = result["float_accuracy"]
        for ax, (title, mat) in zip(axes[0], mats):
            im = ax.imshow(mat, cmap="viridis", vmin=min(vmin, vmax - 1e-9), vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(per["layers"])), per["layers"], rotation=45, ha="right")
            ax.set_yticks(range(len(per["multipliers"])),
                          per["multipliers"] if ax is axes[0][0] else [], fontsize=7)
            ax.set_title(f"accuracy %, {title}")
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    if not np.isnan(mat[i, j]):
                        ax.text(j, i, f"{mat[i, j]:.1f}", ha="center", va="center", fontsize=6,
                                color="white" if mat[i, j] < (vmin + vmax) / 2 else "black")
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
        fig.suptitle("each layer approximated alone (others exact)", fontsize=9)
        path = os.path.join(out, "per_layer.png")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    return files


# ------------------------------------------------------------------------------ command line
def add_parser(subparsers):
    """Register the ``survey`` and ``eval`` subcommands on an argparse subparsers object."""
    p = subparsers.add_parser(
        "survey", help="accuracy of a network under each multiplier (tuned and untuned)",
        description="Evaluate a model on held-out data with each multiplier in every Conv2D/Dense "
                    "layer, with and without weight tuning; print a table and write results.csv, "
                    "results.json and a PNG plot. Defaults: the shipped digits CNN, its held-out "
                    "digits and all shipped multipliers of the matching signedness.")
    p.add_argument("--multipliers", nargs="+", metavar="M",
                   help="shipped names or paths (.c, .bin, .h, .npy); commas also separate; "
                        "NAME=PATH names one, PATH:signed / PATH:unsigned says how to read it")
    p.add_argument("--model", metavar="M.npz|M.onnx",
                   help="model file: axkern .npz or ONNX (default: the shipped digits CNN)")
    p.add_argument("--data", metavar="D.npz", help="held-out data: an .npz with arrays x and y "
                   "(default: the data set named by the model)")
    p.add_argument("--per-layer", action="store_true",
                   help="also approximate each layer alone: layer x multiplier accuracy matrix")
    p.add_argument("--assign", metavar="LAYER=M,...",
                   help="evaluate one mixed configuration (other layers exact)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="evaluate on the Dask cluster of this scheduler (tcp://host:8786) "
                        "instead of local processes")
    p.add_argument("--output", default="axkern-survey", metavar="DIR",
                   help="output folder (default ./axkern-survey)")
    p.add_argument("--tune", choices=["both", "yes", "no"], default="both",
                   help="weight tuning: both (default), only tuned, only untuned")
    p.add_argument("--signedness", choices=["auto", "unsigned", "signed", "all"], default="auto",
                   help="which shipped multipliers the default list takes (auto: the model's); "
                        "signed/unsigned also say how to read the given table files")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signedness", action="store_const", const="signed",
                   help="same as --signedness signed")
    g.add_argument("--unsigned", dest="signedness", action="store_const", const="unsigned",
                   help="same as --signedness unsigned")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="evaluate in batches (quantization ranges are per batch)")
    p.add_argument("--backend", default="auto", help="kernel backend (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="kernel threads per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG plots")
    p.set_defaults(func=_cmd_survey)

    e = subparsers.add_parser(
        "eval", help="held-out accuracy of a model with one multiplier",
        description="Held-out accuracy of a model with a multiplier in every Conv2D/Dense layer "
                    "(or float without one), next to the float accuracy.")
    e.add_argument("model", nargs="?", metavar="MODEL",
                   help="model file, .npz or .onnx (default: the shipped digits CNN)")
    e.add_argument("--multiplier", "-m", metavar="M",
                   help="shipped name or path (NAME=PATH, PATH:signed accepted); 'float' or "
                        "none for the float model")
    e.add_argument("--tune", action="store_true", help="ALWANN weight tuning")
    e.add_argument("--tune-layers", metavar="LAYER,...",
                   help="tune only these layers (as listed in axkern search's 'tuned' column)")
    e.add_argument("--assign", metavar="LAYER=M,...", help="per-layer multipliers (override -m)")
    e.add_argument("--quant", help="quantization mode for every layer (default auto)")
    e.add_argument("--data", metavar="D.npz", help="held-out data: an .npz with arrays x and y")
    e.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N samples")
    e.add_argument("--batch-size", type=int, metavar="N", help="evaluate in batches")
    e.add_argument("--backend", default="auto", help="kernel backend (default auto)")
    e.add_argument("--threads", type=int, metavar="N", help="kernel threads")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                   help="read the multiplier table files as signed")
    g.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                   help="read the multiplier table files as unsigned")
    e.set_defaults(func=_cmd_eval)
    return p, e


def _split_list(values):
    out = []
    for v in values or []:
        out += [s for s in (p.strip() for p in v.split(",")) if s]
    return out or None


def _cmd_survey(args):
    multipliers = _split_list(args.multipliers)
    if args.multipliers is not None and multipliers is None:
        # an empty list must not fall back to the default one (all shipped multipliers)
        raise ValueError(f"--multipliers {' '.join(args.multipliers)!r} names no multiplier: "
                         "expected shipped names or paths separated by spaces or commas (leave "
                         "--multipliers out to survey all shipped multipliers)")
    try:
        survey(model=args.model, multipliers=multipliers,
               per_layer=args.per_layer, assign=args.assign, jobs=args.jobs, output=args.output,
               tune={"both": "both", "yes": True, "no": False}[args.tune], data=args.data,
               limit=args.limit, signedness=args.signedness, batch_size=args.batch_size,
               backend=args.backend, num_threads=args.threads, progress=not args.no_progress,
               plot=not args.no_plot, scheduler=args.scheduler)
    except MissingDependency as e:
        print(f"axkern survey: {e}", file=sys.stderr)
        return 2
    except _NoDataSet:
        raise ValueError(_NO_DATA_CLI) from None
    return 0


_NO_DATA_CLI = ("the model's metadata names no data set axkern can load: give the held-out data "
                "with --data D.npz (an .npz with arrays x, the inputs in the model's layout: "
                "(N, H, W, C) for axkern's .npz models, as the graph's input for ONNX models, "
                "e.g. (N, C, H, W) from PyTorch; and y (N,) labels)")


def _cmd_eval(args):
    mult = args.multiplier
    if mult is not None and mult.lower() == "float":
        mult = None
    tune = args.tune
    if args.tune_layers is not None:
        if args.tune:
            raise ValueError("--tune tunes every layer and --tune-layers only some: give one")
        tune = [] if args.tune_layers.strip().lower() == "none" else \
            _split_list([args.tune_layers]) or []
    try:
        r = evaluate(args.model, mult, tune=tune, assign=args.assign, data=args.data,
                     limit=args.limit, quant=args.quant, batch_size=args.batch_size,
                     backend=args.backend, num_threads=args.threads, signed=args.signed)
    except MissingDependency as e:
        print(f"axkern eval: {e}", file=sys.stderr)
        return 2
    except _NoDataSet:
        raise ValueError(_NO_DATA_CLI) from None
    if args.json:
        print(_json.dumps(r, indent=2))
        return 0
    if mult is None and not args.assign:
        label = "float"
    else:
        label = str(mult) if not args.assign else args.assign + (
            "" if mult is None else f" (other layers {mult})")
        label += (" tuned" if args.tune else "") + (
            f" tuned {args.tune_layers}" if args.tune_layers else "")
    print(f"{label}: accuracy {r['accuracy']:.2f}% (float {r['float_accuracy']:.2f}%) on {r['data']}")
    return 0


class _CallableModule(type(sys)):
    """``axkern.survey(...)`` calls :func:`survey`; the module stays importable as
    ``axkern.survey`` (importing a submodule rebinds the package attribute to the module,
    so a plain function of that name could not survive)."""

    def __call__(self, *args, **kwargs):
        return survey(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
