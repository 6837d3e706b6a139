"""Training of the scatter CNN (:class:`xsim.scatter.ScatterModel`) on Monte Carlo targets.

Owns the loss (:func:`noise_weighted_loss`), the deterministic training loop (:func:`fit`) and the
dataset-level entry point (:func:`train`, the ``xsim scatter train`` command).

Loss: the Monte Carlo target is a mean over histories, so its error is close to gaussian with the batch
standard error sigma; the negative log-likelihood of the prediction is then the inverse-variance weighted
squared error on the *linear* scatter fraction (a loss on log f of a noisy f would be biased low)::

    L = mean_pixels (exp(net(x)) - f_MC)^2 / (sigma_s^2 + (eps mean f_MC)^2)

sigma_s^2 is the batch variance smoothed over 5 x 5 pixels (gaussian, sigma 1.5 px): the variance estimate
from 10 batches is itself 45 % noisy, and weights taken from it pixel by pixel correlate with the target
and bias the fit; the smoothed map keeps the noise level's spatial trend without that correlation. eps
(1 %) floors the weight of near-noiseless pixels.

Determinism: ``torch.manual_seed(seed)``, ``torch.use_deterministic_algorithms(True)``, a fixed thread
count, and the shuffling and augmentation drawn from ``numpy.random.default_rng(seed)``: a rerun with the
same data, seed and thread count gives the same weights bit for bit on the same machine.
Augmentation: the eight flips/transposes of the square panel, a symmetry of the physics (centred
principal point, no heel effect in the projector).
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
from . import DEFAULT_MODEL, ScatterModel

__all__ = ["fit", "noise_weighted_loss", "smoothed_variance", "train"]

NOISE_FLOOR = 0.01


def smoothed_variance(std: torch.Tensor, sigma_px: float = 1.5) -> torch.Tensor:
    """Gaussian-smoothed variance map (batch, H, W) of per-pixel standard errors (reflect padding)."""
    radius = 2
    x = torch.arange(-radius, radius + 1, dtype=std.dtype)
    g = torch.exp(-0.5 * (x / sigma_px) ** 2)
    g = g / g.sum()
    var = (std**2)[:, None]
    var = F.pad(var, (radius, radius, radius, radius), mode="reflect")
    var = F.conv2d(var, g.view(1, 1, 1, -1))
    var = F.conv2d(var, g.view(1, 1, -1, 1))
    return var[:, 0]


def noise_weighted_loss(log_fraction: torch.Tensor, fraction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Inverse-variance weighted MSE on the linear scatter fraction (module docstring).

    Parameters
    ----------
    log_fraction : Tensor (batch, 1, H, W)
        Network output, ln f.
    fraction : Tensor (batch, H, W)
        Monte Carlo scatter fraction.
    weight : Tensor (batch, H, W)
        1 / (smoothed variance + (eps mean f)^2), from :func:`loss_weights`.
    """
    return torch.mean((torch.exp(log_fraction[:, 0]) - fraction) ** 2 * weight)


def loss_weights(fraction: np.ndarray, fraction_std: np.ndarray) -> np.ndarray:
    """Per-pixel weights of :func:`noise_weighted_loss` for (N, H, W) targets and standard errors."""
    f = torch.as_tensor(fraction, dtype=torch.float64)
    var = smoothed_variance(torch.as_tensor(fraction_std, dtype=torch.float64))
    floor = (NOISE_FLOOR * f.mean(dim=(1, 2), keepdim=True)) ** 2
    return (1.0 / (var + floor)).numpy().astype(np.float32)


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


def fit(features: np.ndarray, fraction: np.ndarray, fraction_std: np.ndarray, epochs: int = 100,
        batch_size: int = 16, lr: float = 2e-3, width: int = 16, depth: int = 3, seed: int = 0,
        threads: int = 2, val: tuple | None = None, model: ScatterModel | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 25, progress: bool = True,
        augment: bool = True) -> tuple[ScatterModel, dict]:
    """Train a ScatterModel on arrays; deterministic for a given seed and thread count.

    Parameters
    ----------
    features : ndarray (N, 4, H, W)
        :func:`xsim.scatter.input_features` of each case.
    fraction, fraction_std : ndarray (N, H, W)
        Monte Carlo scatter fraction and its standard error.
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
    w = loss_weights(y, fraction_std)
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
        vw = torch.as_tensor(loss_weights(val[1], val[2]))
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
                    bx, by, bw = _dihedral([bx, by, bw], int(rng.integers(8)))
                loss = noise_weighted_loss(net(torch.as_tensor(bx)), torch.as_tensor(by), torch.as_tensor(bw))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
            history["train_loss"].append(total / len(x))
            if val is not None:
                net.eval()
                with torch.no_grad():
                    v = float(noise_weighted_loss(net(vx), vy, vw))
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


def train(data_dir: str | os.PathLike | list, out: str | os.PathLike = DEFAULT_MODEL, val_seeds=None, epochs: int = 120,
          batch_size: int = 8, lr: float = 2e-3, width: int = 16, depth: int = 3, seed: int = 0, threads: int = 2,
          progress: bool = True) -> tuple[ScatterModel, dict]:
    """Train on a dataset folder of :func:`xsim.scatter.data.make_dataset` and save the model.

    Parameters
    ----------
    data_dir : path or list of paths
        Training dataset folder(s).
    out : path
        Where to save the model (default: the shipped weights ``xsim/models/scatter_unet.pt``); a checkpoint
        ``<out>.ckpt`` is written during training and removed at the end.
    val_seeds : iterable of int, optional
        Phantom seeds of ``data_dir`` kept out of the fit for validation (model selection); default the
        highest phantom seed.
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
    val_set = {int(seeds.max())} if val_seeds is None else {int(s) for s in val_seeds}
    is_val = np.isin(seeds, list(val_set))
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
                 "train_seeds": sorted(set(seeds[~is_val].tolist())), "val_seeds": sorted(val_set),
                 "kvp_range": [min(kvps), max(kvps)], "photons_per_case": sorted({c["photons"] for c in cases}),
                 "mc_noise_median_per_pixel": float(np.median(noise))},
        "geometry": GEOMETRY,
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width, "depth": depth,
                     "seed": seed, "threads": threads, "time_s": round(history["time_s"], 1),
                     "best_epoch": history["best_epoch"], "final_train_loss": history["train_loss"][-1],
                     "best_val_loss": min(history["val_loss"]),
                     "loss": "inverse-variance weighted MSE on the linear scatter fraction (xsim.scatter.train)"},
        "parameters": model.n_parameters(),
    }
    model.save(out)
    checkpoint.unlink(missing_ok=True)
    return model, history
