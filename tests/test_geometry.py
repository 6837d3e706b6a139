"""Tests for xsim.geometry: the projective camera and the C-arm (conventions: docs/coordinates.md)."""
import json

import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.geometry import Camera, CArm

VIEWS = [(0.0, 0.0), (30.0, 10.0), (-45.0, -25.0), (90.0, 0.0), (120.0, 40.0), (-170.0, 85.0)]


def _carms():
    return [
        CArm(),
        CArm(sdd_mm=1200.0, sid_mm=800.0, detector_shape=(300, 400), pixel_mm=(0.5, 0.7),
             principal_point_px=(180.25, 160.5)),
    ]


@pytest.mark.parametrize("lao, cran", VIEWS)
def test_pixel_rays_project_back_onto_their_pixels(lao, cran):
    for carm in _carms():
        cam = carm.view(lao, cran, isocenter_mm=(10.0, -20.0, 30.0), table_mm=(5.0, 0.0, -40.0))
        positions, directions = cam.pixel_rays()
        rows, cols = cam.detector_shape
        assert positions.shape == directions.shape == (rows, cols, 3)
        np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-12)
        v, u = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        # points on each ray, in front of, on and behind the detector, all land on their pixel
        for s in (0.3, 1.0, 1.7):
            pts = cam.source_mm + s * (positions - cam.source_mm)
            uv = cam.project_points(pts)
            err = np.abs(uv - np.stack([u, v], axis=-1)).max()
            assert err < 1e-8, err  # measured ~4e-13 px


def test_detector_frame_is_the_physical_detector():
    carm = _carms()[1]
    cam = carm.view(25.0, -15.0)
    f = cam.detector_frame()
    # pixel pitch, orthogonal axes in the detector plane, plane at sdd from the source
    assert np.linalg.norm(f.u_step_mm) == pytest.approx(0.7, rel=1e-12)
    assert np.linalg.norm(f.v_step_mm) == pytest.approx(0.5, rel=1e-12)
    assert f.u_step_mm @ f.v_step_mm == pytest.approx(0.0, abs=1e-12)
    assert f.u_step_mm @ f.normal == pytest.approx(0.0, abs=1e-12)
    assert (f.origin_mm - cam.source_mm) @ f.normal == pytest.approx(1200.0, rel=1e-12)
    np.testing.assert_allclose(cam.pixel_mm, [0.5, 0.7], rtol=1e-12)
    positions, _ = cam.pixel_rays()
    np.testing.assert_allclose(positions[0, 0], f.origin_mm, atol=1e-9)
    expected = f.origin_mm + 3 * f.u_step_mm + 2 * f.v_step_mm
    np.testing.assert_allclose(positions[2, 3], expected, atol=1e-9)


@pytest.mark.parametrize("lao, cran", VIEWS)
def test_isocenter_projects_to_the_principal_point(lao, cran):
    for carm in _carms():
        iso, table = np.array([12.0, -7.0, 3.0]), np.array([0.0, 20.0, 50.0])
        cam = carm.view(lao, cran, isocenter_mm=iso, table_mm=table)
        np.testing.assert_allclose(cam.project_points(iso - table), carm.principal_point_px, atol=1e-9)
        np.testing.assert_allclose(cam.principal_point_px, carm.principal_point_px, atol=1e-9)
        assert np.linalg.norm(cam.source_mm - (iso - table)) == pytest.approx(carm.sid_mm, rel=1e-12)


def test_table_moves_the_patient():
    carm = CArm()
    # table 10 mm toward the head: the isocenter now sits on patient point z = -10
    cam = carm.view(table_mm=(0.0, 0.0, 10.0))
    uv = cam.project_points([0.0, 0.0, -10.0])
    np.testing.assert_allclose(uv, carm.principal_point_px, atol=1e-9)


def test_frontal_view_orientation():
    carm = CArm()
    cam = carm.view(0.0, 0.0)
    np.testing.assert_allclose(cam.source_mm, [0.0, 760.0, 0.0], atol=1e-9)  # posterior
    assert cam.detector_frame().normal @ [0.0, -1.0, 0.0] == pytest.approx(1.0)  # beam P -> A
    pp = carm.principal_point_px
    left, head = cam.project_points([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]])
    assert left[0] > pp[0] and left[1] == pytest.approx(pp[1])  # patient's left on the image right
    assert head[1] < pp[1] and head[0] == pytest.approx(pp[0])  # head at the top
    # mirror image of the view from the source: K[0, 0] < 0 with a proper rotation
    assert cam.intrinsics[0, 0] < 0 < cam.intrinsics[1, 1]


def test_lao_90_puts_the_source_on_the_patients_right():
    cam = CArm().view(lao_deg=90.0)
    np.testing.assert_allclose(cam.source_mm, [-760.0, 0.0, 0.0], atol=1e-9)
    centre = cam.detector_points_mm(cam.principal_point_px)
    np.testing.assert_allclose(centre, [1020.0 - 760.0, 0.0, 0.0], atol=1e-9)
    rao = CArm().view(lao_deg=-90.0)
    np.testing.assert_allclose(rao.source_mm, [760.0, 0.0, 0.0], atol=1e-9)


def test_cran_tilts_the_detector_toward_the_head():
    cam = CArm().view(cran_deg=30.0)
    centre = cam.detector_points_mm(cam.principal_point_px)
    assert centre[2] > 0 > cam.source_mm[2]
    # order: CRAN about the LAO-rotated x axis; at LAO 90, CRAN 30 the beam is (cos 30, 0, sin 30)
    n = CArm().view(90.0, 30.0).detector_frame().normal
    np.testing.assert_allclose(n, [np.cos(np.radians(30)), 0.0, np.sin(np.radians(30))], atol=1e-12)


def test_angles_round_trip():
    rng = np.random.default_rng(4)
    for lao, cran in zip(rng.uniform(-180, 180, 50), rng.uniform(-89, 89, 50)):
        back = CArm.angles_of(CArm().view(lao, cran))
        np.testing.assert_allclose(back, (lao, cran), atol=1e-9)


@pytest.mark.parametrize("lao, cran", VIEWS)
def test_magnification_at_the_isocenter(lao, cran):
    carm = CArm(sdd_mm=1020.0, sid_mm=760.0, pixel_mm=0.6)
    cam = carm.view(lao, cran)
    e_u, e_v, _ = CArm.axes(lao, cran)
    for axis in (e_u, e_v):
        a, b = cam.project_points([-5.0 * axis, 5.0 * axis])
        # a 10 mm segment at the isocenter, parallel to the detector, spans 10 sdd / sid / pixel px
        assert np.linalg.norm(b - a) == pytest.approx(10.0 * 1020.0 / 760.0 / 0.6, rel=1e-12)


def test_camera_decomposition():
    cam = _carms()[1].view(-35.0, 20.0, isocenter_mm=(3.0, 4.0, 5.0))
    K, R, t = cam.intrinsics, cam.rotation, cam.translation_mm
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(K @ np.hstack([R, t[:, None]]), cam.matrix, atol=1e-9)
    np.testing.assert_allclose(R @ cam.source_mm + t, 0.0, atol=1e-9)
    np.testing.assert_allclose(abs(K[0, 0]) * 0.7, 1200.0, rtol=1e-12)
    np.testing.assert_allclose(K[1, 1] * 0.5, 1200.0, rtol=1e-12)


def test_from_matrix_recovers_the_camera():
    cam = _carms()[1].view(40.0, -10.0, isocenter_mm=(1.0, 2.0, 3.0))
    raw = 3.7 * cam.matrix  # any positive scale
    back = Camera.from_matrix(raw, cam.detector_shape, pixel_mm=(0.5, 0.7))
    assert back.sdd_mm == pytest.approx(1200.0, rel=1e-12)
    np.testing.assert_allclose(back.matrix, cam.matrix, atol=1e-12)
    np.testing.assert_allclose(back.source_mm, cam.source_mm, atol=1e-9)
    np.testing.assert_allclose(back.detector_frame().origin_mm, cam.detector_frame().origin_mm,
                               atol=1e-9)
    with pytest.raises(XsimInputError, match="does not fit the matrix"):
        Camera.from_matrix(raw, cam.detector_shape, pixel_mm=0.6)


def test_degenerate_matrix_is_refused():
    affine_camera = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])  # source at infinity
    with pytest.raises(XsimInputError, match="degenerate"):
        Camera.from_matrix(affine_camera, (10, 10), 1.0)
    rank2 = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 1.0]])
    with pytest.raises(XsimInputError, match="degenerate"):
        Camera(rank2, (10, 10), 100.0)
    with pytest.raises(XsimInputError, match="shape"):
        Camera(np.eye(3), (10, 10), 100.0)
    with pytest.raises(XsimInputError, match="finite"):
        Camera(np.full((3, 4), np.nan), (10, 10), 100.0)


def test_points_behind_the_source_have_no_image():
    cam = CArm().view()
    uv = cam.project_points([[0.0, 2000.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.isnan(uv[0]).all() and np.isfinite(uv[1]).all()


def test_json_round_trip_is_exact():
    for carm in _carms():
        cam = carm.view(33.3, -12.7, isocenter_mm=(1.1, -2.2, 3.3), table_mm=(0.1, 0.2, 0.3))
        text = cam.to_json()
        back = Camera.from_json(text)
        assert np.array_equal(back.matrix, cam.matrix)
        assert back.detector_shape == cam.detector_shape and back.sdd_mm == cam.sdd_mm
        assert back.to_json() == text
        assert np.array_equal(Camera.from_dict(json.loads(text)).matrix, cam.matrix)
    with pytest.raises(XsimInputError, match="xsim.Camera"):
        Camera.from_dict({"format": "other"})
    with pytest.raises(XsimInputError, match="not valid JSON"):
        Camera.from_json("{")


def test_binned_camera_pixels_are_the_mean_of_their_block():
    cam = CArm(detector_shape=(12, 8), pixel_mm=0.5).view(20.0, 5.0)
    binned = cam.binned(4)
    assert binned.detector_shape == (3, 2)
    fine, _ = cam.pixel_rays()
    coarse, _ = binned.pixel_rays()
    block_mean = fine.reshape(3, 4, 2, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(coarse, block_mean, atol=1e-9)
    np.testing.assert_allclose(binned.pixel_mm, [2.0, 2.0], rtol=1e-12)
    with pytest.raises(XsimInputError, match="divide"):
        cam.binned(5)


@pytest.mark.parametrize("kwargs, match", [
    ({"sdd_mm": 0.0}, "sdd_mm"),
    ({"sdd_mm": -5.0}, "sdd_mm"),
    ({"sid_mm": 1020.0}, "sid_mm"),
    ({"sid_mm": 1500.0}, "sid_mm"),
    ({"sid_mm": 0.0}, "sid_mm"),
    ({"pixel_mm": 0.0}, "pixel_mm"),
    ({"pixel_mm": (0.5, -0.5)}, "pixel_mm"),
    ({"pixel_mm": (0.5, 0.5, 0.5)}, "pixel_mm"),
    ({"detector_shape": (512.5, 512)}, "detector_shape"),
    ({"detector_shape": (512.0, 512)}, "detector_shape"),
    ({"detector_shape": (512,)}, "detector_shape"),
    ({"detector_shape": (0, 512)}, "detector_shape"),
    ({"detector_shape": "512"}, "detector_shape"),
    ({"principal_point_px": (1.0, np.nan)}, "principal_point_px"),
])
def test_carm_input_checks(kwargs, match):
    with pytest.raises(XsimInputError, match=match):
        CArm(**kwargs)


def test_view_input_checks():
    carm = CArm()
    with pytest.raises(XsimInputError, match="lao_deg"):
        carm.view(lao_deg=200.0)
    with pytest.raises(XsimInputError, match="cran_deg"):
        carm.view(cran_deg=95.0)
    with pytest.raises(XsimInputError, match="isocenter_mm"):
        carm.view(isocenter_mm=(0.0, 0.0))
    with pytest.raises(XsimInputError, match="table_mm"):
        carm.view(table_mm=(0.0, np.inf, 0.0))
