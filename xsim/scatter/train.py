"""Training of the scatter CNN (:class:`xsim.scatter.ScatterModel`) on Monte Carlo targets.

Owns the loss (:func:`deviance_loss`), the deterministic training loop (:func:`fit`) and the
dataset-level entry point (:func:`train`, the ``xsim scatter train`` command).

Loss: the Monte Carlo target f is a sum over histories, a scaled count (compound Poisson: variance about
kappa f per pixel); its noise can be large (about 50 % per 64 x 64 pixel for 3e6 histories over a varied
geometry, and pixels that no scattered photon reached, f = 0). The loss is the scaled Poisson deviance of
the prediction p = exp(net(x)), each case divided by its mean fraction::

    L = mean_cases mean_pixels (p - f - f ln(p / f)) / mean(f_case)

Its expectation over the noise is smallest at p = E[f] whatever the noise level (unbiased), zeros are
ordinary targets, and for p = f (1 + d) a pixel costs (f / mean f) d^2 / 2: the relative error, weighted
within a case by the pixel's share of the scatter, every case counting alike. The first model's loss, an
inverse-variance weighted squared error with weights from the Monte Carlo's own batch variances, was biased
on data this noisy (the weights correlate with the fluctuation of the target they weight; zero pixels
have zero variance and got the largest weights): 25 % MAPE on held-out cases, measured on 2026-12-05.

Determinism: ``torch.manual_seed(seed)``, ``torch.use_deterministic_algorithms(True)``, a fixed thread
count, and the shuffling and augmentation drawn from ``numpy.random.default_rng(seed)``: a rerun with the
same data, seed and thread count gives the same weights bit for bit on the same machine.
Augmentation: the flips and transposes of the panel, a symmetry of the physics (centred principal point, no
heel effect in the projector), drawn per case: a transpose swaps the panel's height and width channels, and is
not drawn for a case with an anti-scatter grid (its strips run along the panel's columns, a direction the
transpose would turn).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import XsimInputError, check_positive
from . import DEFAULT_MODEL, FEATURES, ScatterModel

__all__ = ["deviance_loss", "fit", "loss_weights", "train"]

def deviance_loss(log_fraction: torch.Tensor, fraction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scaled Poisson deviance of exp(log_fraction) against the Monte Carlo fraction (module docstring).

    Parameters
    ----------
    log_fraction : Tensor (batch, 1, H, W)
        Network output, ln p.
    fraction : Tensor (batch, H, W)
        Monte Carlo scatter fraction f (>= 0).
    weight : Tensor (batch, H, W)
        1 / (the case's mean fraction), from :func:`loss_weights`.
    """
    lp = log_fraction[:, 0]
    f_ln_f = torch.where(fraction > 0, fraction * torch.log(torch.clamp(fraction, min=1e-30)), 0.0)
    return torch.mean((torch.exp(lp) - fraction - fraction * lp + f_ln_f) * weight)


def loss_weights(fraction: np.ndarray) -> np.ndarray:
    """Per-pixel weights of :func:`deviance_loss` for (N, H, W) targets: 1 / the case's mean fraction."""
    f = np.asarray(fraction, dtype=np.float64)
    mean = f.mean(axis=(1, 2), keepdims=True)
    if np.any(mean <= 0):
        raise XsimInputError(f"cases {np.flatnonzero(mean.ravel() <= 0).tolist()} have no scatter at all: too few "
                             "histories to train on")
    return np.broadcast_to(1.0 / mean, f.shape).astype(np.float32)


_ROWS, _COLS, _GRID = FEATURES.index("panel_rows"), FEATURES.index("panel_cols"), FEATURES.index("grid_ratio")


def _dihedral(arrays: list[np.ndarray], k: int) -> list[np.ndarray]:
    """Apply the k-th of the 8 flips/transposes to the last two axes of each array."""
    out = []
    for a in arrays:
        if k & 4:
            a = np.swapaxes(a, -1, -2)
        if k & 2:
            a = a[..., ::-1, :]
        if k & 1:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def _augment(x: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator):
    """Each case of a batch under a flip/transpose of its own (module docstring)."""
    x, y, w = x.copy(), y.copy(), w.copy()
    for i in range(len(x)):
        k = int(rng.integers(4 if x[i, _GRID, 0, 0] > 0 else 8))
        x[i], y[i], w[i] = _dihedral([x[i], y[i], w[i]], k)
        if k & 4:
            x[i, [_ROWS, _COLS]] = x[i, [_COLS, _ROWS]]
    return x, y, w


def fit(features: np.ndarray, fraction: np.ndarray, fraction_std: np.ndarray, epochs: int = 100,
        batch_size: int = 16, lr: float = 2e-3, width: int = 16, depth: int = 3, seed: int = 0,
        threads: int = 2, val: tuple | None = None, model: ScatterModel | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 25, progress: bool = True,
        augment: bool = True) -> tuple[ScatterModel, dict]:
    """Train a ScatterModel on arrays; deterministic for a given seed and thread count.

    Parameters
    ----------
    features : ndarray (N, N_INPUTS, H, W)
        :func:`xsim.scatter.input_features` of each case.
    fraction, fraction_std : ndarray (N, H, W)
        Monte Carlo scatter fraction and its standard error (checked and kept with the data; the deviance
        needs no per-pixel variances).
    epochs, batch_size : int
        Passes over the data; cases per step.
    lr : float
        Peak learning rate of Adam (cosine decay to 0).
    width, depth : int
        U-Net size (ignored when ``model`` is given).
    seed : int
        Seeds the initial weights, the shuffling and the augmentation.
    threads : int
        torch CPU threads (results depend on it, through the order of sums).
    val : (features, fraction, fraction_std), optional
        Validation cases (other phantom seeds); the model with the lowest validation loss is returned.
    model : ScatterModel, optional
        Continue from this model instead of a new one.
    checkpoint : path, optional
        Where to write the model every ``checkpoint_every`` epochs (to resume by hand with ``model=``).
    progress : bool
        tqdm progress bar over epochs.
    augment : bool
        Random flips/transposes.

    Returns
    -------
    (ScatterModel, dict)
        The model (in eval mode) and the history: ``train_loss``, ``val_loss`` per epoch, ``best_epoch``,
        ``time_s``.
    """
    from tqdm import tqdm

    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "seed" else 1):
            raise XsimInputError(f"{name} must be a positive integer, got {value!r}")
    check_positive("lr", lr)
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(fraction, dtype=np.float32)
    if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]) or np.shape(fraction_std) != y.shape:
        raise XsimInputError(f"features must be (N, C, H, W) and fraction, fraction_std (N, H, W); got "
                             f"{x.shape}, {y.shape}, {np.shape(fraction_std)}")
    w = loss_weights(y)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    if model is None:
        net = ScatterModel(width=width, depth=depth)
        with torch.no_grad():  # start at the data's mean scatter fraction rather than f = 1
            net.head.bias.fill_(float(np.log(np.mean(y))))
    else:
        net = model
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = int(np.ceil(len(x) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    if val is not None:
        vx = torch.as_tensor(np.asarray(val[0], dtype=np.float32))
        vy = torch.as_tensor(np.asarray(val[1], dtype=np.float32))
        vw = torch.as_tensor(loss_weights(val[1]))
    history = {"train_loss": [], "val_loss": [], "best_epoch": None}
    best, best_state = np.inf, None
    start = time.perf_counter()
    bar = tqdm(range(epochs), disable=not progress, desc="xsim scatter train", unit="epoch")
    try:
        for epoch in bar:
            net.train()
            order = rng.permutation(len(x))
            total = 0.0
            for s in range(steps_per_epoch):
                idx = np.sort(order[s * batch_size:(s + 1) * batch_size])
                bx, by, bw = x[idx], y[idx], w[idx]
                if augment:
                    bx, by, bw = _augment(bx, by, bw, rng)
                loss = deviance_loss(net(torch.as_tensor(bx)), torch.as_tensor(by), torch.as_tensor(bw))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
            history["train_loss"].append(total / len(x))
            if val is not None:
                net.eval()
                with torch.no_grad():
                    v = float(deviance_loss(net(vx), vy, vw))
                history["val_loss"].append(v)
                if v < best:
                    best, history["best_epoch"] = v, epoch
                    best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3g}",
                            **({"val": f"{history['val_loss'][-1]:.3g}"} if val is not None else {}))
            if checkpoint is not None and (epoch + 1) % checkpoint_every == 0:
                net.metadata["checkpoint_epoch"] = epoch + 1
                net.save(checkpoint)
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    history["time_s"] = time.perf_counter() - start
    return net, history


def training_ranges(cases: list[dict], features: np.ndarray) -> dict:
    """The ranges of the training cases' beam and geometry, for :func:`xsim.scatter.warn_out_of_range`: kVp
    and view angles from the cases, the geometry from the constant input channels the model was given
    (``features``, (N, N_INPUTS, H, W)); grids over the cases with a grid only."""
    from .. import scatter as s

    def channel(name, centre, scale):
        return features[:, FEATURES.index(name), 0, 0].astype(np.float64) * scale + centre

    rows, cols = channel("panel_rows", s.PANEL_CENTRE_MM, s.PANEL_SCALE_MM), \
        channel("panel_cols", s.PANEL_CENTRE_MM, s.PANEL_SCALE_MM)
    ratio = channel("grid_ratio", 0.0, s.GRID_RATIO_SCALE)
    values = {"kvp": [c["kvp"] for c in cases], "sdd_mm": channel("sdd", s.SDD_CENTRE_MM, s.SDD_SCALE_MM),
              "air_gap_mm": channel("air_gap", s.AIR_GAP_CENTRE_MM, s.AIR_GAP_SCALE_MM),
              "panel_mm": np.minimum(rows, cols), "panel_max_mm": np.maximum(rows, cols),
              "lao_deg": [c["lao_deg"] for c in cases], "cran_deg": [c["cran_deg"] for c in cases]}
    if np.any(ratio > 0):
        values["grid_ratio"] = ratio[ratio > 0]
        values["grid_lines_per_cm"] = channel("grid_lines", 0.0, s.GRID_LINES_SCALE)[ratio > 0]
    return {k: [round(float(np.min(v)), 3), round(float(np.max(v)), 3)] for k, v in values.items()}


def train(data_dir: str | os.PathLike | list, out: str | os.PathLike = DEFAULT_MODEL, val_seeds=None, epochs: int = 120,
          batch_size: int = 8, lr: float = 2e-3, width: int = 16, depth: int = 3, seed: int = 0, threads: int = 2,
          progress: bool = True, val_every: int = 16) -> tuple[ScatterModel, dict]:
    """Train on a dataset folder of :func:`xsim.scatter.data.make_dataset` and save the model.

    Parameters
    ----------
    data_dir : path or list of paths
        Training dataset folder(s).
    out : path
        Where to save the model (default: the shipped weights ``xsim/models/scatter_unet.pt``); a checkpoint
        ``<out>.ckpt`` is written during training and removed at the end.
    val_seeds : iterable of int, optional
        Phantom seeds of procedural phantoms kept out of the fit for validation (model selection), with the
        random bodies whose seed is 1 modulo ``val_every``; default: the highest procedural seed (and those
        bodies).
    val_every : int
        See ``val_seeds``.
    epochs, batch_size, lr, width, depth, seed, threads, progress
        See :func:`fit`.

    Returns
    -------
    (ScatterModel, dict)
        The saved model and its training history.
    """
    from .. import __version__
    from .data import GEOMETRY, load_dataset

    data = load_dataset(data_dir)
    seeds = np.array([c["phantom_seed"] for c in data["cases"]])
    body = np.array([c["kind"] == "body" for c in data["cases"]])
    procedural = seeds[~body]
    val_set = ({int(procedural.max())} if procedural.size else set()) if val_seeds is None else \
        {int(s) for s in val_seeds}
    if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 2:
        raise XsimInputError(f"val_every must be an integer >= 2, got {val_every!r}")
    # bodies by seed, so a body drawn twice is never on both sides
    is_val = (np.isin(seeds, list(val_set)) & ~body) | (body & (seeds % val_every == 1))
    if is_val.all() or not is_val.any():
        raise XsimInputError(f"val_seeds {sorted(val_set)} must select some but not all phantom seeds of {data_dir} "
                             f"(seeds {sorted(set(seeds.tolist()))})")
    def pick(mask):
        return data["features"][mask], data["fraction"][mask], data["fraction_std"][mask]

    out = Path(out)
    checkpoint = out.with_name(out.name + ".ckpt")  # not *.pt: never shipped as package data by accident
    model, history = fit(*pick(~is_val), epochs=epochs, batch_size=batch_size, lr=lr, width=width, depth=depth,
                         seed=seed, threads=threads, val=pick(is_val),
                         checkpoint=checkpoint, progress=progress)
    cases = data["cases"]
    kvps = [c["kvp"] for c in cases]
    noise = [float(r["noise_median"]) for r in data["rows"]]
    dirs = [str(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) else [str(data_dir)]
    model.metadata = {
        "xsim_version": __version__, "torch_version": str(torch.__version__), "machine": platform.processor() or
        platform.machine(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": {"dirs": dirs, "cases": len(cases), "train_cases": int((~is_val).sum()),
                 "val_cases": int(is_val.sum()), "kinds": sorted({c["kind"] for c in cases}),
                 "train_seeds": sorted(set(seeds[~is_val & ~body].tolist())), "val_seeds": sorted(val_set),
                 "random_bodies": int(len(set(seeds[body].tolist()))),
                 "kvp_range": [min(kvps), max(kvps)], "photons_per_case": sorted({c["photons"] for c in cases}),
                 "mc_noise_median_per_pixel": float(np.median(noise))},
        "geometry": GEOMETRY,
        "ranges": training_ranges(data["cases"], data["features"]),
        "features": list(FEATURES),
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width, "depth": depth,
                     "seed": seed, "threads": threads, "time_s": round(history["time_s"], 1),
                     "best_epoch": history["best_epoch"], "final_train_loss": history["train_loss"][-1],
                     "best_val_loss": min(history["val_loss"]),
                     "loss": "scaled Poisson deviance per case over its mean fraction (xsim.scatter.train)"},
        "parameters": model.n_parameters(),
    }
    model.save(out)
    checkpoint.unlink(missing_ok=True)
    return model, history
