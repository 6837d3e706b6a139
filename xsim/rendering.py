"""Render: realistic, labelled X-ray images from a CT or phantom, the pipeline most users run.

Owns :func:`render` and :class:`Rendering`, :func:`load_phantom` (a CT file, a phantom file or a
procedural name such as ``"thorax:seed=3"``) and :func:`demo`.

Pipeline per image (each stage documented in its module):

1. primary: polychromatic ray cast (:func:`xsim.projector.project`), signal S_p and detected photons n_p
   per pixel per mAs, and the flat field;
2. scatter: ``"none"``, ``"mc"`` (:func:`xsim.montecarlo.monte_carlo`, its scatter image in the same units)
   or ``"cnn"`` (``xsim.scatter.predict``, the learned model). Scattered photons are counted with the
   primary's mean deposit per detected photon at that pixel, ``n_s = S_s * n_p / S_p`` (an approximation:
   scattered photons are somewhat softer);
3. readout (:class:`xsim.readout.Readout`): for the exposure ``mas``, expected signal ``(S_p + S_s) mAs``
   and photons ``(n_p + n_s) mAs`` -> compound-Poisson quantum noise, blur, electronic noise, gain/offset;
4. labels (:mod:`xsim.labels`) and the settings that produced the image (camera included).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .checks import XsimInputError, check_choice, check_positive, check_type
from .detector import Detector
from .device import HostView
from .geometry import Camera, CArm
from .labels import LabelSpec, make_labels
from .physics.spectra import Spectrum
from .readout import Readout, display, log_image, spectral_spread_factor
from .volume import Phantom, Volume

__all__ = ["PROCEDURAL_PHANTOMS", "Rendering", "SCATTER_MODES", "demo", "load_phantom", "procedural_spec", "render",
           "render_views"]

SCATTER_MODES = ("cnn", "mc", "none")
PROCEDURAL_PHANTOMS = ("thorax", "abdomen", "pelvis", "head")


class Rendering:
    """One rendered image, its components, labels and settings.

    Attributes
    ----------
    image : ndarray (rows, cols) float32
        Raw detector frame, ADU (``gain * keV + offset``; counts for a photon-counting detector).
    primary, scatter : ndarray (rows, cols) float32
        Expected (noise-free, unblurred) primary and scatter signal for the exposure, keV per pixel.
    flat_field : ndarray (rows, cols) float32
        Expected signal without the patient for the exposure, keV per pixel.
    camera : Camera
    labels : dict
        ``{"landmarks": {name: {"uv", "depth_mm", "inside"}}, "masks": {name: bool array}}``.
    settings : dict
        Everything that produced the image (JSON-serialisable), camera included.
    readout : Readout
    """

    def __init__(self, image, primary, scatter, flat_field, camera, labels, settings, readout):
        # numpy arrays, or on the cuda backend GPU tensors copied to the host when first read
        self._images = {"image": HostView(image), "primary": HostView(primary), "scatter": HostView(scatter),
                        "flat_field": HostView(flat_field)}
        self.camera = camera
        self.labels = labels
        self.settings = settings
        self.readout = readout

    @property
    def image(self) -> np.ndarray:
        return self._images["image"].host()

    @property
    def primary(self) -> np.ndarray:
        return self._images["primary"].host()

    @property
    def scatter(self) -> np.ndarray:
        return self._images["scatter"].host()

    @property
    def flat_field(self) -> np.ndarray:
        return self._images["flat_field"].host()

    @property
    def device(self) -> dict:
        """The images where they were computed, without a copy: ``image``, ``primary``, ``scatter``,
        ``flat_field`` as torch tensors on the GPU for a GPU rendering, numpy arrays otherwise."""
        return {name: view.device for name, view in self._images.items()}

    @property
    def transmission(self) -> np.ndarray:
        """Gain/offset/flat-field corrected image ``(image - offset) / (gain * flat_field)``, float32."""
        return self.readout.transmission(self.image, self.flat_field)

    @property
    def log(self) -> np.ndarray:
        """``-ln(transmission)`` (floored at transmission 1e-6), float32."""
        return log_image(self.transmission)

    def display(self, look: str = "fluoro", **window) -> np.ndarray:
        """Windowed image in [0, 1] (see :func:`xsim.readout.display`), float32."""
        return display(self.transmission, look=look, **window)

    def save(self, prefix: str | os.PathLike, bits: int = 8) -> dict[str, Path]:
        """Write ``prefix.png`` (preview), ``prefix.tiff`` (float32 raw) and ``prefix.h5`` (everything)."""
        from .imageio import save_rendering

        return save_rendering(self, prefix, bits=bits)

    def __repr__(self) -> str:
        rows, cols = self.image.shape
        s = self.settings
        return (f"Rendering({rows}x{cols}, kvp={s['spectrum']['kvp']}, mas={s['mas']:g}, scatter={s['scatter']!r}, "
                f"noise={s['noise']}, seed={s['seed']})")


def render(volume_or_phantom: Volume | Phantom, camera: Camera, spectrum: Spectrum, mas: float = 1.0,
           scatter: str = "cnn", noise: bool = True, seed: int = 0, detector: Detector | None = None,
           readout: Readout | None = None, labels: LabelSpec | None = None, mc_photons: float = 1e6,
           backend: str = "auto", threads: int | None = None, grid: Any = None) -> Rendering:
    """Render one realistic X-ray image with its labels.

    Parameters
    ----------
    volume_or_phantom : Volume or Phantom
        A CT volume (HU, converted with the default HU calibration) or a phantom.
    camera : Camera
        Source and detector pose (e.g. ``CArm().view(lao_deg=30, cran_deg=10)``).
    spectrum : Spectrum
        Tube spectrum, photons per mAs per mm^2 at 1 m (e.g. ``Spectrum.tungsten(80)``).
    mas : float
        Tube current-time product of the exposure, mAs, > 0.
    scatter : {"cnn", "mc", "none"}
        Scatter model: the learned CNN (``xsim.scatter``), Monte Carlo, or none.
    noise : bool
        Draw quantum and electronic noise (False: the expected, blurred image).
    seed : int
        Seed of the noise and of the Monte Carlo; same seed, same image on a given backend. The CPU draws the
        noise with ``numpy.random.default_rng(seed)``, the GPU with a torch CUDA generator seeded with
        ``seed``: the two backends give statistically identical frames, not the same one.
    detector : Detector, optional
        Energy response (default ``Detector()``: 600 um CsI, energy integrating).
    readout : Readout, optional
        Readout chain (default ``Readout()``: blur, electronic noise, unit gain).
    labels : LabelSpec, optional
        Labels to compute (default: the phantom's landmarks).
    mc_photons : float
        Histories of the Monte Carlo when ``scatter="mc"``. The Monte Carlo image's own statistical noise
        adds to the image: use enough histories for the scatter to be smooth at the pixel size.
    backend : {"auto", "cpu", "cuda"}
        Kernel target. On ``"cuda"`` (with a CUDA build of torch) the whole pipeline runs on the GPU: the
        phantom stays resident between calls, and the images are copied to the host only when read.
    threads : int, optional
        CPU threads of the kernels (default all); images do not depend on it.
    grid : xsim.AntiScatterGrid, optional
        An anti-scatter grid in front of the panel (default none): the scatter is that behind the grid (the CNN
        is told the grid; the Monte Carlo simulates it), and the primary, the detected photons and the flat
        field are multiplied by the grid's primary transmission (at normal incidence, averaged over the
        spectrum weighted by the detector response).

    Returns
    -------
    Rendering
    """
    start = time.perf_counter()
    phantom = _as_phantom(volume_or_phantom)
    check_type("camera", camera, Camera)
    args = _check_render_args(phantom, spectrum, mas, scatter, noise, seed, detector, readout, labels, grid)
    return _render_views(phantom, [camera], args, mc_photons, backend, threads, start)[0]


def render_views(volume_or_phantom: Volume | Phantom, cameras: Any, spectrum: Spectrum, mas: float = 1.0,
                 scatter: str = "cnn", noise: bool = True, seed: int = 0, detector: Detector | None = None,
                 readout: Readout | None = None, labels: LabelSpec | None = None, mc_photons: float = 1e6,
                 backend: str = "auto", threads: int | None = None, grid: Any = None) -> list[Rendering]:
    """Render one volume from many cameras (a C-arm sweep, the views of a dataset): one :class:`Rendering` per
    camera, view ``k`` being ``render(..., cameras[k], ..., seed=seed + k)``.

    On the cuda backend the views are projected back to back without waiting, their scatter goes through the
    CNN as one batch and their readout runs on the GPU, so the device stays busy (on the CPU the views are
    rendered one after the other). The same settings as :func:`render`; ``cameras`` is a sequence of
    :class:`Camera`. A batch through the CNN may round its last bits differently from one image at a time.
    """
    start = time.perf_counter()
    phantom = _as_phantom(volume_or_phantom)
    cameras = list(cameras) if not isinstance(cameras, Camera) else [cameras]
    if not cameras:
        raise XsimInputError("cameras must hold at least one Camera")
    for k, cam in enumerate(cameras):
        check_type(f"cameras[{k}]", cam, Camera)
    args = _check_render_args(phantom, spectrum, mas, scatter, noise, seed, detector, readout, labels, grid)
    return _render_views(phantom, cameras, args, mc_photons, backend, threads, start)


def _check_render_args(phantom, spectrum, mas, scatter, noise, seed, detector, readout, labels, grid) -> dict:
    """The checked settings of a rendering, defaults filled in."""
    check_type("spectrum", spectrum, Spectrum)
    check_positive("mas", mas, unit="mAs")
    check_choice("scatter", scatter, SCATTER_MODES)
    check_type("noise", noise, (bool, np.bool_))
    check_type("seed", seed, (int, np.integer))
    if seed < 0:
        raise XsimInputError(f"seed must be >= 0, got {seed}")
    detector = Detector() if detector is None else check_type("detector", detector, Detector)
    readout = Readout() if readout is None else check_type("readout", readout, Readout)
    if labels is not None:
        check_type("labels", labels, LabelSpec).check(phantom)
    if grid is not None:
        from .montecarlo import AntiScatterGrid

        check_type("grid", grid, AntiScatterGrid)
    return dict(spectrum=spectrum, mas=float(mas), scatter=scatter, noise=bool(noise), seed=int(seed),
                detector=detector, readout=readout, labels=labels, grid=grid)


def _render_views(phantom: Phantom, cameras: list, a: dict, mc_photons: float, backend: str, threads: int | None,
                  start: float) -> list[Rendering]:
    from .device import cached
    from .projector import project

    spectrum, detector, scatter, mas = a["spectrum"], a["detector"], a["scatter"], a["mas"]
    # per (spectrum, detector): the spread factor k, photons per keV of the open beam, air kerma (~1.5 ms)
    beam = cached(spectrum, f"render beam facts {detector!r}", lambda: (
        spectral_spread_factor(spectrum, detector), _flat_photons_per_keV(spectrum, detector),
        spectrum.air_kerma_per_mas_uGy() if spectrum.kvp else None))
    grid = a["grid"]
    a["primary_transmission"] = 1.0 if grid is None else cached(
        spectrum, f"render grid {grid!r} {detector!r}", lambda: _grid_primary_transmission(grid, spectrum, detector))
    projections = [project(phantom, cam, spectrum=spectrum, detector=detector, backend=backend, threads=threads,
                           photons=True) for cam in cameras]
    gpu = _gpu_pipeline(projections[0])
    scatter_images = _scatter_images(phantom, cameras, projections, a, mc_photons, backend, threads, gpu)
    out = []
    for k, (cam, proj, scatter_img) in enumerate(zip(cameras, projections, scatter_images)):
        seed = a["seed"] + k
        if gpu:
            images = _readout_on_device(proj, scatter_img, cam, a, beam, seed)
        else:
            images = _readout_on_host(proj, scatter_img, cam, a, beam, seed)
        label_data = make_labels(a["labels"], phantom, cam, projection=proj, backend=backend, threads=threads)
        settings = _settings(phantom, cam, spectrum, detector, a["readout"], mas, scatter, a["noise"], seed,
                             beam, mc_photons)
        settings["grid"] = None if grid is None else {"grid": repr(grid),
                                                      "primary_transmission": a["primary_transmission"]}
        settings["render_time_s"] = (time.perf_counter() - start) / len(cameras)
        out.append(Rendering(*images, cam, label_data, settings, a["readout"]))
    return out


def _gpu_pipeline(projection) -> bool:
    """True when the projection is on a GPU and torch works there: scatter, noise and readout then run on it."""
    from .device import is_device_array

    if not is_device_array(projection.device["primary"]):
        return False
    import torch

    return torch.cuda.is_available()


def _scatter_images(phantom, cameras, projections, a, mc_photons, backend, threads, gpu) -> list:
    """The expected scatter signal per pixel per mAs of each view: float32 numpy arrays, or torch tensors on the
    GPU when ``gpu`` (the CNN's batch never leaves the device)."""
    scatter, spectrum = a["scatter"], a["spectrum"]
    if scatter == "cnn":
        from . import scatter as scatter_model  # torch is imported only when the CNN is used

        if gpu:
            return list(scatter_model.predict_on_device(projections, spectrum, scatter_model.load_model(),
                                                        grid=a["grid"]))
        return [np.asarray(scatter_model.predict(p, spectrum, grid=a["grid"]), dtype=np.float32)
                for p in projections]
    images = []
    for k, (cam, proj) in enumerate(zip(cameras, projections)):
        if scatter == "mc":
            from .montecarlo import monte_carlo

            mc = monte_carlo(phantom, cam, spectrum=spectrum, photons=int(mc_photons), seed=a["seed"] + k,
                             detector=a["detector"], grid=a["grid"], backend=backend, threads=threads,
                             progress=False)
            image = np.asarray(mc.scatter, dtype=np.float32)
        else:
            image = None
        if gpu:
            import torch

            primary = torch.from_dlpack(proj.device["primary"])
            images.append(torch.zeros_like(primary) if image is None else torch.as_tensor(image, device=primary.device))
        else:
            images.append(np.zeros_like(proj.primary) if image is None else image)
    return images


def _readout_on_host(proj, scatter_img, camera, a, beam, seed) -> tuple:
    """(raw frame, primary, scatter, flat field) for the exposure, numpy float32 (the CPU pipeline)."""
    mas, tp = a["mas"], a["primary_transmission"]
    primary, photons, flat = proj.primary, proj.photons, proj.flat_field
    if tp != 1.0:  # behind an anti-scatter grid
        primary, photons, flat = (np.float32(tp) * x for x in (primary, photons, flat))
    k, flat_photons_per_keV, _ = beam
    # detected photons per keV of signal: the primary's at the pixel, the flat field's where no primary
    photons_per_keV = np.where(primary > 0, photons / np.where(primary > 0, primary, 1.0), flat_photons_per_keV)
    signal = (primary.astype(np.float64) + scatter_img) * mas
    n_detected = (photons.astype(np.float64) + scatter_img * photons_per_keV) * mas
    rng = np.random.default_rng(int(seed)) if a["noise"] else None
    image = a["readout"].read(signal, n_detected, camera.pixel_mm, rng, spread_factor=k, noise=a["noise"])
    return (image, (primary * mas).astype(np.float32), (scatter_img * mas).astype(np.float32),
            (flat * mas).astype(np.float32))


def _readout_on_device(proj, scatter_img, camera, a, beam, seed) -> tuple:
    """:func:`_readout_on_host` on the GPU with torch: the same expressions in the same precisions, noise from a
    torch CUDA generator seeded with ``seed`` (reproducible on the GPU, not the CPU's numpy draws)."""
    import torch

    mas = a["mas"]
    images = proj.device
    primary, photons = torch.from_dlpack(images["primary"]), torch.from_dlpack(images["photons"])
    flat = torch.from_dlpack(images["flat_field"])
    tp = a["primary_transmission"]
    if tp != 1.0:  # behind an anti-scatter grid
        primary, photons, flat = (float(tp) * x for x in (primary, photons, flat))
    k, flat_photons_per_keV, _ = beam
    photons_per_keV = torch.where(primary > 0, photons / torch.where(primary > 0, primary, 1.0),
                                  flat_photons_per_keV)
    signal = (primary.double() + scatter_img) * mas
    n_detected = (photons.double() + scatter_img * photons_per_keV) * mas
    generator = None
    if a["noise"]:
        generator = torch.Generator(device=primary.device)
        generator.manual_seed(int(seed))
    image = a["readout"].read_on_device(signal, n_detected, camera.pixel_mm, generator, spread_factor=k,
                                        noise=a["noise"])
    return image, (primary * mas).float(), (scatter_img * mas).float(), (flat * mas).float()


def _grid_primary_transmission(grid, spectrum, detector) -> float:
    """The grid's primary transmission at normal incidence, averaged over the spectrum weighted by the
    detector's response (the signal-weighted mean)."""
    keep = spectrum.fluence > 0
    e, phi = spectrum.energies_keV[keep], spectrum.fluence[keep]
    w = phi * np.asarray(detector.response(e), dtype=float)
    t = np.array([grid.primary_transmission(float(x)) for x in e])
    return float(np.sum(w * t) / np.sum(w))


def _flat_photons_per_keV(spectrum, detector) -> float:
    """Detected photons per keV of the unattenuated beam (normal incidence)."""
    keep = spectrum.fluence > 0
    e, phi = spectrum.energies_keV[keep], spectrum.fluence[keep]
    eta = np.asarray(detector.absorption_efficiency(e), dtype=float)
    w = np.asarray(detector.response(e), dtype=float)
    return float(np.sum(phi * eta) / np.sum(phi * w))


def _as_phantom(obj: Any) -> Phantom:
    if isinstance(obj, Volume):
        return obj.to_phantom()
    if isinstance(obj, Phantom):
        return obj
    raise XsimInputError(f"volume_or_phantom must be a Volume (HU) or a Phantom, got {type(obj).__name__}")


def _settings(phantom, camera, spectrum, detector, readout, mas, scatter, noise, seed, beam, mc_photons) -> dict:
    from . import __version__

    k, _, air_kerma = beam
    lao, cran = CArm.angles_of(camera)
    return {
        "xsim_version": __version__,
        "units": {"image": "ADU = gain_adu_per_keV * keV + offset_adu", "primary": "keV per pixel",
                  "scatter": "keV per pixel", "flat_field": "keV per pixel", "world": "patient LPS mm",
                  "uv": "(column, row) pixels, centres at integers"},
        "mas": float(mas), "scatter": scatter, "noise": bool(noise), "seed": int(seed),
        "mc_photons": float(mc_photons) if scatter == "mc" else None,
        "spectral_spread_factor": k,
        "spectrum": {"kvp": spectrum.kvp, "description": spectrum.description,
                     "mean_energy_keV": spectrum.mean_energy_keV,
                     "air_kerma_per_mas_uGy_at_1m": air_kerma},
        "detector": repr(detector),
        "readout": readout.to_dict(),
        "phantom": {"source": phantom.source, "shape": list(phantom.shape),
                    "spacing_mm": [float(s) for s in phantom.spacing_mm], "materials": phantom.material_names},
        "camera": {**camera.to_dict(), "intrinsics": camera.intrinsics.tolist(),
                   "rotation": camera.rotation.tolist(), "translation_mm": camera.translation_mm.tolist(),
                   "source_mm": camera.source_mm.tolist(), "pixel_mm": camera.pixel_mm.tolist(),
                   "lao_deg": lao, "cran_deg": cran},
    }


def load_phantom(source: str | os.PathLike) -> Phantom:
    """A phantom from a CT file or folder (:func:`xsim.load_ct`), a phantom ``.h5`` file, or a procedural name.

    Procedural names: ``thorax``, ``abdomen``, ``pelvis`` or ``head``, optionally with keyword arguments,
    e.g. ``"thorax:seed=3,voxel_mm=4,vessels=true,tool=true"`` (:mod:`xsim.phantoms`).
    """
    from . import phantoms
    from .volume import load_ct

    text = str(source)
    procedural = procedural_spec(text)
    if procedural is not None:
        name, kwargs = procedural
        return getattr(phantoms, name)(**kwargs)
    path = Path(text)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return Phantom.load(path)
    if not path.exists():
        raise XsimInputError(f"{text!r} is neither a CT/phantom path that exists nor a procedural phantom "
                             f"({', '.join(PROCEDURAL_PHANTOMS)}, e.g. 'thorax:seed=3')")
    return load_ct(path).to_phantom()


def procedural_spec(text: str) -> tuple[str, dict] | None:
    """``("thorax", {"seed": 3})`` for ``"thorax:seed=3"``; None when ``text`` names no procedural phantom.

    Checks the keyword names and values (seed: int, voxel_mm: float, vessels/tool: true/false) without
    building the phantom.
    """
    name, _, args = str(text).partition(":")
    if name not in PROCEDURAL_PHANTOMS:
        return None
    kwargs: dict[str, Any] = {}
    for part in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = part.partition("=")
        check_choice(f"{name} argument", key.strip(), ("seed", "voxel_mm", "vessels", "tool"))
        if not eq:
            raise XsimInputError(f"procedural phantom argument {part!r} must be key=value (in {text!r})")
        kwargs[key.strip()] = _parse_value(key.strip(), value.strip(), text)
    return name, kwargs


def _parse_value(key: str, value: str, text: str) -> Any:
    try:
        if key == "seed":
            return int(value)
        if key == "voxel_mm":
            return float(value)
    except ValueError:
        raise XsimInputError(f"{key} must be a number, got {value!r} (in {text!r})") from None
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise XsimInputError(f"{key} must be true or false, got {value!r} (in {text!r})")


def demo(out_dir: str | os.PathLike = "xsim-demo", seed: int = 0) -> dict[str, Path]:
    """Render the built-in thorax (contrast-filled vessels and a guidewire) and write PNG, TIFF and HDF5.

    No external data; a few seconds on two CPU cores. The thorax phantom (1.5 mm voxels) with its vessels
    at an angiographic iodine concentration (40 mg I/ml), viewed RAO 30 CRAN 20 centred on the heart at
    70 kVp (3 mm Al + 0.1 mm Cu), 0.2 mAs, 512 x 512 pixels of 0.6 mm, CsI detector, no scatter model.

    Returns
    -------
    dict
        Paths of the written files: ``{"png": ..., "tiff": ..., "h5": ...}``.
    """
    from . import phantoms

    phantom = _with_contrast(phantoms.thorax(seed=seed, voxel_mm=1.5, vessels=True, tool=True),
                             iodine_mass_fraction=0.04, density_g_cm3=1.05)
    camera = CArm(detector_shape=(512, 512), pixel_mm=0.6).view(
        lao_deg=-30.0, cran_deg=20.0, isocenter_mm=phantom.landmarks["heart_center"])
    spectrum = Spectrum.tungsten(70.0, {"Al": 3.0, "Cu": 0.1})
    rendering = render(phantom, camera, spectrum, mas=0.2, scatter="none", noise=True, seed=seed,
                       labels=LabelSpec(mask_materials=["iodine contrast", "stainless steel"]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return rendering.save(out / "demo_thorax")


def _with_contrast(phantom: Phantom, iodine_mass_fraction: float, density_g_cm3: float) -> Phantom:
    """The phantom with its "iodine contrast" replaced by water + iodine at the given mass fraction.

    The procedural phantoms fill vessels at a CT-enhancement level (~10 mg I/ml), too faint for a
    fluoroscopy frame; during an injection the lumen holds tens to hundreds of mg I/ml.
    """
    from .physics.materials import Material, material

    water = material("water").composition
    fractions = {el: (1.0 - iodine_mass_fraction) * w for el, w in water.items()}
    fractions["I"] = fractions.get("I", 0.0) + iodine_mass_fraction
    contrast = Material.from_mass_fractions("iodine contrast", fractions, density_g_cm3)
    k = phantom.material_names.index("iodine contrast")
    materials = [contrast if i == k else m for i, m in enumerate(phantom.materials)]
    density = np.where(phantom.material_index == k, np.float32(density_g_cm3), phantom.density_g_cm3)
    return Phantom(phantom.material_index, density, phantom.affine, materials, landmarks=phantom.landmarks,
                   source=f"{phantom.source or 'procedural phantom'}; iodine contrast {iodine_mass_fraction:g} by mass")
