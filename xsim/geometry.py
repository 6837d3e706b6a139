"""Imaging geometry: the projective X-ray camera (point source, flat detector) and the C-arm
that positions it around the patient.

Conventions (full statement with a diagram in docs/coordinates.md):

- world = patient coordinates in mm, LPS (+x patient left, +y posterior, +z superior);
- detector images have shape (rows, cols); a pixel is addressed (u, v) = (column, row) with
  pixel centres at integer coordinates and (0, 0) the first row and column of the array;
- a camera is a 3x4 matrix ``P`` mapping homogeneous world points to homogeneous pixels
  ``(u w, v w, w)``. xsim scales ``P`` so that ``w`` is the depth in mm of the point along the
  principal axis, positive from the source toward the detector.
"""
from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

from .checks import XsimInputError, check_positive, check_range, check_type

_FORMAT = "xsim.Camera"
_FORMAT_VERSION = 1


class DetectorFrame(NamedTuple):
    """Where the detector lies in the world: what a projector kernel needs besides the source.

    The centre of pixel (u, v) is ``origin_mm + u * u_step_mm + v * v_step_mm``.
    """

    origin_mm: np.ndarray  #: (3,) world position of the centre of pixel (u=0, v=0), mm
    u_step_mm: np.ndarray  #: (3,) world displacement for one column to the right (+u), mm
    v_step_mm: np.ndarray  #: (3,) world displacement for one row down (+v), mm
    normal: np.ndarray  #: (3,) unit vector along the principal axis, from the source to the detector


def _check_detector_shape(detector_shape: Any) -> tuple[int, int]:
    shape = tuple(detector_shape) if isinstance(detector_shape, (tuple, list, np.ndarray)) else None
    if shape is None or len(shape) != 2:
        raise XsimInputError(f"detector_shape must be (rows, cols), got {detector_shape!r}")
    for n in shape:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise XsimInputError(
                f"detector_shape must be two positive integers (rows, cols), got {detector_shape!r}"
            )
    return int(shape[0]), int(shape[1])


def _pixel_pair(name: str, value: Any) -> np.ndarray:
    """A scalar or a (row, col) pair of pixel spacings in mm, as a (2,) array."""
    arr = np.asarray(value, dtype=float)
    if arr.shape not in ((), (2,)):
        raise XsimInputError(f"{name} must be a scalar or a (row, col) pair in mm, got {value!r}")
    check_positive(name, arr, unit="mm")
    return np.broadcast_to(arr, (2,)).copy()


def _decompose(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split M = K R with K upper triangular (K[1,1] > 0, K[2,2] = 1) and R a proper rotation.

    K[0,0] carries the sign the rotation cannot: it is negative when the image is the mirror of
    the view from the source, which is the radiographic display convention (see CArm).
    """
    K, R = scipy.linalg.rq(M)
    signs = np.sign(np.diag(K))
    K, R = K * signs, signs[:, None] * R  # K D, D R with D = diag(signs), D D = I
    if np.linalg.det(R) < 0:
        K[:, 0], R[0] = -K[:, 0], -R[0]
    return K / K[2, 2], R


class Camera:
    """A projective X-ray camera: point source and flat detector.

    Parameters
    ----------
    matrix : array_like, shape (3, 4)
        World mm -> homogeneous pixel coordinates. Defined up to a *positive* factor: points
        between the source and the detector must get w > 0 (a matrix of the opposite sign
        describes a detector on the other side of the source). Rescaled so that the third row
        of its left 3x3 block has unit norm, which makes w the depth in mm along the principal axis.
    detector_shape : (int, int)
        Detector (rows, cols).
    sdd_mm : float
        Source-to-detector distance in mm (length of the principal axis). Together with the
        matrix it fixes the pixel size; use :meth:`from_matrix` to give the pixel size instead.
    """

    def __init__(self, matrix: Any, detector_shape: Any, sdd_mm: float):
        P = np.array(matrix, dtype=float)
        if P.shape != (3, 4):
            raise XsimInputError(f"matrix must have shape (3, 4), got {P.shape}")
        check_range("matrix", P)
        depth_norm = np.linalg.norm(P[2, :3])
        if depth_norm == 0.0:
            raise XsimInputError("matrix is degenerate: the third row of its left 3x3 block is zero")
        self._init(P / depth_norm, detector_shape, sdd_mm)

    def _init(self, P: np.ndarray, detector_shape: Any, sdd_mm: float) -> None:
        singular = np.linalg.svd(P[:, :3], compute_uv=False)
        if singular[-1] <= 1e-12 * singular[0]:
            raise XsimInputError(
                "matrix is degenerate: its left 3x3 block is singular (source at infinity or a "
                f"rank-deficient projection; singular values {singular})"
            )
        self._detector_shape = _check_detector_shape(detector_shape)
        self._sdd_mm = float(check_positive("sdd_mm", sdd_mm, unit="mm"))
        self._P = P
        self._P.setflags(write=False)
        self._M_inv = np.linalg.inv(P[:, :3])
        self._K, self._R = _decompose(P[:, :3])

    @classmethod
    def from_matrix(cls, matrix: Any, detector_shape: Any, pixel_mm: Any) -> "Camera":
        """Build a camera from a raw 3x4 projection matrix and the detector pixel size.

        Parameters
        ----------
        matrix : array_like, shape (3, 4)
            World mm -> homogeneous pixels, w > 0 in front of the source (see :class:`Camera`).
        detector_shape : (int, int)
            Detector (rows, cols).
        pixel_mm : float or (float, float)
            Pixel spacing in mm, scalar or (row, col). Fixes the source-to-detector distance:
            ``sdd_mm = pixel_col_mm * |K[0, 0]|``; the row spacing must agree with the matrix.
        """
        P = np.array(matrix, dtype=float)
        if P.shape != (3, 4):
            raise XsimInputError(f"matrix must have shape (3, 4), got {P.shape}")
        check_range("matrix", P)
        pixel = _pixel_pair("pixel_mm", pixel_mm)
        depth_norm = np.linalg.norm(P[2, :3])
        if depth_norm == 0.0:
            raise XsimInputError("matrix is degenerate: the third row of its left 3x3 block is zero")
        cam = cls.__new__(cls)
        # sdd is provisional until the pixel size is matched below
        cam._init(P / depth_norm, detector_shape, 1.0)
        sdd_mm = pixel[1] * abs(cam._K[0, 0])
        cam._sdd_mm = sdd_mm
        row_mm = cam.pixel_mm[0]
        if not math.isclose(row_mm, pixel[0], rel_tol=1e-6):
            raise XsimInputError(
                f"pixel_mm {tuple(pixel)} (row, col) does not fit the matrix: with the column "
                f"spacing it implies sdd_mm = {sdd_mm:.6g} and a row spacing of {row_mm:.6g} mm"
            )
        return cam

    # --- the model -----------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """(3, 4) projection matrix, scaled so that w = depth in mm along the principal axis."""
        return self._P

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Detector (rows, cols)."""
        return self._detector_shape

    @property
    def sdd_mm(self) -> float:
        """Source-to-detector distance along the principal axis, mm."""
        return self._sdd_mm

    @property
    def intrinsics(self) -> np.ndarray:
        """K (3x3, pixels): focal lengths sdd/pixel, skew and principal point; K[2, 2] = 1.

        K[0, 0] < 0 for a mirrored image (the radiographic display convention of :class:`CArm`).
        """
        return self._K.copy()

    @property
    def rotation(self) -> np.ndarray:
        """R (3x3, proper rotation): world -> camera axes; its third row is the principal axis."""
        return self._R.copy()

    @property
    def translation_mm(self) -> np.ndarray:
        """t (3,), mm: camera coordinates x_c = R x_world + t (the source is at x_c = 0)."""
        return np.linalg.solve(self._K, self._P[:, 3])

    @property
    def source_mm(self) -> np.ndarray:
        """World position of the focal spot, mm: the null space of P, C = -M^-1 p4."""
        return -self._M_inv @ self._P[:, 3]

    @property
    def principal_point_px(self) -> np.ndarray:
        """(u, v) pixel hit by the principal axis (perpendicular from the source to the detector)."""
        return self._K[:2, 2].copy()

    @property
    def pixel_mm(self) -> np.ndarray:
        """(row, col) pixel spacing in mm, i.e. the lengths of v_step_mm and u_step_mm."""
        frame = self.detector_frame()
        return np.array([np.linalg.norm(frame.v_step_mm), np.linalg.norm(frame.u_step_mm)])

    def detector_frame(self) -> DetectorFrame:
        """Detector position: centre of pixel (0, 0), world steps per column and per row, normal.

        A pixel (u, v) back-projects to the ray direction d = M^-1 (u, v, 1); with P scaled so that
        the principal-axis row of M has unit norm, n . d = 1, so the detector plane (depth sdd)
        is reached at C + sdd * d: affine in (u, v), which gives origin and steps directly.
        """
        C, s, Mi = self.source_mm, self._sdd_mm, self._M_inv
        return DetectorFrame(
            origin_mm=C + s * Mi[:, 2],
            u_step_mm=s * Mi[:, 0],
            v_step_mm=s * Mi[:, 1],
            normal=self._P[2, :3].copy(),
        )

    # --- using it ------------------------------------------------------------------------------
    def project_points(self, points_mm: Any) -> np.ndarray:
        """Project world points to pixel coordinates.

        Parameters
        ----------
        points_mm : array_like, shape (..., 3)
            World positions, mm (LPS).

        Returns
        -------
        numpy.ndarray, shape (..., 2)
            (u, v) = (column, row) in pixels, centres at integers. NaN for points at or behind
            the source plane (w <= 0), which have no image.
        """
        pts = np.asarray(points_mm, dtype=float)
        if pts.shape[-1:] != (3,):
            raise XsimInputError(f"points_mm must have shape (..., 3), got {pts.shape}")
        h = pts @ self._P[:, :3].T + self._P[:, 3]
        w = h[..., 2:]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.where(w > 0, h[..., :2] / w, np.nan)
        return uv

    def detector_points_mm(self, uv: Any) -> np.ndarray:
        """World positions (..., 3) in mm of detector points given in pixels (..., 2) as (u, v)."""
        uv = np.asarray(uv, dtype=float)
        if uv.shape[-1:] != (2,):
            raise XsimInputError(f"uv must have shape (..., 2), got {uv.shape}")
        f = self.detector_frame()
        return f.origin_mm + uv[..., :1] * f.u_step_mm + uv[..., 1:] * f.v_step_mm

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every pixel centre on the detector and the unit ray to it from the source.

        Returns
        -------
        positions_mm : numpy.ndarray, shape (rows, cols, 3)
            World position of each pixel centre, mm.
        directions : numpy.ndarray, shape (rows, cols, 3)
            Unit vectors from the source to each pixel centre.
        """
        rows, cols = self._detector_shape
        v, u = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
        positions = self.detector_points_mm(np.stack([u, v], axis=-1))
        rays = positions - self.source_mm
        return positions, rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def binned(self, factor: int) -> "Camera":
        """The same camera read out with factor x factor pixels combined (e.g. for scatter).

        Binned pixel u' covers original pixels f u' .. f u' + f - 1, so its centre is at
        u = f u' + (f - 1) / 2. The detector shape must be divisible by ``factor``.
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise XsimInputError(f"factor must be a positive integer, got {factor!r}")
        rows, cols = self._detector_shape
        if rows % factor or cols % factor:
            raise XsimInputError(
                f"factor {factor} must divide the detector shape {self._detector_shape}"
            )
        off = (factor - 1) / 2.0
        S = np.array([[1 / factor, 0, -off / factor], [0, 1 / factor, -off / factor], [0, 0, 1]])
        cam = Camera.__new__(Camera)
        cam._init(S @ self._P, (rows // factor, cols // factor), self._sdd_mm)
        return cam

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-Python description (exact: floats survive JSON by shortest repr)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "matrix": self._P.tolist(),
            "detector_shape": list(self._detector_shape),
            "sdd_mm": self._sdd_mm,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Camera":
        """Inverse of :meth:`to_dict`; the camera is reproduced bit for bit."""
        check_type("camera description", data, dict)
        if data.get("format") != _FORMAT or data.get("format_version") != _FORMAT_VERSION:
            raise XsimInputError(
                f"not an {_FORMAT} description of version {_FORMAT_VERSION}: got format "
                f"{data.get('format')!r}, version {data.get('format_version')!r}"
            )
        missing = {"matrix", "detector_shape", "sdd_mm"} - set(data)
        if missing:
            raise XsimInputError(f"camera description lacks {sorted(missing)}")
        P = np.array(data["matrix"], dtype=float)
        if P.shape != (3, 4):
            raise XsimInputError(f"matrix must have shape (3, 4), got {P.shape}")
        check_range("matrix", P)
        if not math.isclose(np.linalg.norm(P[2, :3]), 1.0, rel_tol=1e-12):
            return cls(P, data["detector_shape"], data["sdd_mm"])
        cam = cls.__new__(cls)
        cam._init(P, data["detector_shape"], data["sdd_mm"])  # already normalised: keep bits
        return cam

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Camera":
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise XsimInputError(f"camera JSON is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def __repr__(self) -> str:
        src = ", ".join(f"{c:.1f}" for c in self.source_mm)
        return (
            f"Camera(detector_shape={self._detector_shape}, sdd_mm={self._sdd_mm:g}, "
            f"pixel_mm=({', '.join(f'{p:.6g}' for p in self.pixel_mm)}), source_mm=({src}))"
        )


def rotation_z(deg: float) -> np.ndarray:
    """Rotation by ``deg`` degrees about the world z axis (right-handed), 3x3."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(deg: float) -> np.ndarray:
    """Rotation by ``deg`` degrees about the world x axis (right-handed), 3x3."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# Detector axes at LAO 0, CRAN 0 (frontal view of a supine, head-first patient), world LPS:
# columns (+u) toward the patient's left, rows (+v) toward the feet, beam posterior -> anterior.
_U0 = np.array([1.0, 0.0, 0.0])
_V0 = np.array([0.0, 0.0, -1.0])
_N0 = np.array([0.0, -1.0, 0.0])


class CArm:
    """An isocentric C-arm: source and detector on opposite sides of the isocenter.

    Angles (docs/coordinates.md): patient supine, head first. At LAO 0, CRAN 0 the source is
    posterior (under the table, +y) and the detector anterior. LAO (primary angle, RAO < 0)
    swings the detector toward the patient's left about the patient's superior axis +z;
    CRAN (secondary angle, CAUD < 0) tilts the detector toward the head about the C-arm's
    horizontal axis, i.e. the x axis already turned by the LAO rotation. Detector axes:
    ``(u, v, beam) = Rz(lao) Rx(-cran) (+x, -z, -y)``, so the frontal view shows the patient's
    right on the image left and the head at the top, like a radiograph on a light box.

    Parameters
    ----------
    sdd_mm : float
        Source-to-detector distance, mm.
    sid_mm : float
        Source-to-isocenter distance, mm; 0 < sid_mm < sdd_mm.
    detector_shape : (int, int)
        Detector (rows, cols).
    pixel_mm : float or (float, float)
        Pixel spacing, mm, scalar or (row, col).
    principal_point_px : (float, float), optional
        (u, v) pixel hit by the central ray; default the detector centre
        ((cols - 1) / 2, (rows - 1) / 2).
    """

    def __init__(
        self,
        sdd_mm: float = 1020.0,
        sid_mm: float = 760.0,
        detector_shape: Any = (512, 512),
        pixel_mm: Any = 0.6,
        principal_point_px: Any = None,
    ):
        self.sdd_mm = float(check_positive("sdd_mm", sdd_mm, unit="mm"))
        self.sid_mm = float(
            check_range("sid_mm", sid_mm, 0.0, self.sdd_mm, low_inclusive=False,
                        high_inclusive=False, unit="mm")
        )
        self.detector_shape = _check_detector_shape(detector_shape)
        self.pixel_mm = _pixel_pair("pixel_mm", pixel_mm)
        rows, cols = self.detector_shape
        if principal_point_px is None:
            principal_point_px = ((cols - 1) / 2.0, (rows - 1) / 2.0)
        pp = np.asarray(principal_point_px, dtype=float)
        if pp.shape != (2,):
            raise XsimInputError(f"principal_point_px must be (u, v), got {principal_point_px!r}")
        self.principal_point_px = check_range("principal_point_px", pp)

    @staticmethod
    def axes(lao_deg: float = 0.0, cran_deg: float = 0.0) -> np.ndarray:
        """World directions of the detector axes at the given angles.

        Returns
        -------
        numpy.ndarray, shape (3, 3)
            Rows: +u (columns), +v (rows), beam direction (source -> detector); unit vectors.
        """
        check_range("lao_deg", lao_deg, -180.0, 180.0, unit="deg")
        check_range("cran_deg", cran_deg, -90.0, 90.0, unit="deg")
        rot = rotation_z(lao_deg) @ rotation_x(-cran_deg)
        return np.stack([rot @ _U0, rot @ _V0, rot @ _N0])

    def view(
        self,
        lao_deg: float = 0.0,
        cran_deg: float = 0.0,
        isocenter_mm: Any = (0.0, 0.0, 0.0),
        table_mm: Any = (0.0, 0.0, 0.0),
    ) -> Camera:
        """The camera for one C-arm pose.

        Parameters
        ----------
        lao_deg : float
            Primary angle in degrees, LAO > 0, RAO < 0, in [-180, 180].
        cran_deg : float
            Secondary angle in degrees, CRAN > 0, CAUD < 0, in [-90, 90].
        isocenter_mm : (float, float, float)
            Isocenter in patient (world LPS) mm with the table at its reference position.
        table_mm : (float, float, float)
            Table displacement from its reference position along the patient's LPS axes, mm.
            The patient moves with the table, so the isocenter lands on patient point
            ``isocenter_mm - table_mm`` (moving the table +10 mm toward the head images a
            point 10 mm further toward the feet).
        """
        iso = np.asarray(isocenter_mm, dtype=float)
        table = np.asarray(table_mm, dtype=float)
        for name, vec in (("isocenter_mm", iso), ("table_mm", table)):
            if vec.shape != (3,):
                raise XsimInputError(f"{name} must be (x, y, z) in mm, got {vec!r}")
            check_range(name, vec, unit="mm")
        e_u, e_v, e_n = self.axes(lao_deg, cran_deg)
        source = iso - table - self.sid_mm * e_n
        # Right-handed camera frame (x_c, y_c, z_c) = (-e_u, e_v, e_n); the column axis runs
        # against x_c, which K absorbs with a negative focal length (mirror = radiographic display).
        R = np.stack([-e_u, e_v, e_n])
        row_mm, col_mm = self.pixel_mm
        K = np.array([
            [-self.sdd_mm / col_mm, 0.0, self.principal_point_px[0]],
            [0.0, self.sdd_mm / row_mm, self.principal_point_px[1]],
            [0.0, 0.0, 1.0],
        ])
        P = K @ np.hstack([R, (-R @ source)[:, None]])
        cam = Camera.__new__(Camera)
        cam._init(P, self.detector_shape, self.sdd_mm)  # |R[2]| = 1: already normalised
        return cam

    @staticmethod
    def angles_of(camera: Camera) -> tuple[float, float]:
        """(lao_deg, cran_deg) of a camera's beam direction; the inverse of :meth:`view`.

        Only the principal axis is used: beam = (sin a cos b, -cos a cos b, sin b) for
        LAO a, CRAN b. At CRAN +-90 the LAO angle is undefined and returned as 0.
        """
        check_type("camera", camera, Camera)
        n = camera.detector_frame().normal
        cran = math.degrees(math.asin(max(-1.0, min(1.0, n[2]))))
        lao = math.degrees(math.atan2(n[0], -n[1])) if math.hypot(n[0], n[1]) > 1e-12 else 0.0
        return lao, cran

    def __repr__(self) -> str:
        pixel = ", ".join(f"{p:g}" for p in self.pixel_mm)
        pp = ", ".join(f"{p:g}" for p in self.principal_point_px)
        return (
            f"CArm(sdd_mm={self.sdd_mm:g}, sid_mm={self.sid_mm:g}, detector_shape="
            f"{self.detector_shape}, pixel_mm=({pixel}), principal_point_px=({pp}))"
        )
