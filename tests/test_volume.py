"""Tests for xsim.volume: Volume, Phantom and the CT readers (NIfTI, NRRD, DICOM, numpy)."""
import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.physics.calibration import HUCalibration
from xsim.physics.materials import Material, material
from xsim.volume import RAS_TO_LPS, Phantom, Volume, load_ct

MARK = (3, 1, 2)  # the marked voxel of the test volume


def _rotation(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    R = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _test_volume():
    """A small integer-HU volume with one marked voxel, on an oblique, anisotropic LPS grid."""
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 1500, size=(5, 4, 6)).astype(np.float32)
    hu[MARK] = 3000.0
    A = np.eye(4)
    A[:3, :3] = _rotation(2, 20.0) @ _rotation(0, -10.0) @ np.diag([0.8, 0.9, 2.5])
    A[:3, 3] = [-40.0, 25.0, 110.0]
    return hu, A


def _world_of_max(vol):
    ijk = np.unravel_index(np.argmax(vol.hu), vol.shape)
    return vol.voxel_to_world(np.array(ijk, dtype=float))


def _assert_same_patient(a, b):
    """Every voxel of a sits on a voxel centre of b that holds the same HU."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in a.shape], indexing="ij"), axis=-1)
    in_b = b.world_to_voxel(a.voxel_to_world(ijk))
    np.testing.assert_allclose(in_b, np.round(in_b), atol=1e-4)
    idx = np.round(in_b).astype(int)
    np.testing.assert_array_equal(a.hu, b.hu[idx[..., 0], idx[..., 1], idx[..., 2]])


def _write_dicom_series(folder, hu, A, slope=1.0, intercept=-1024.0, shuffle=True, uid=None,
                        prefix="img"):
    """One CT slice per k, with i along a DICOM row and j down the columns (hu[:, :, k] = pixels.T)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    series = uid or generate_uid()
    spacing = np.linalg.norm(A[:3, :3], axis=0)
    along_row, along_col = A[:3, 0] / spacing[0], A[:3, 1] / spacing[1]
    order = np.random.default_rng(1).permutation(hu.shape[2]) if shuffle else range(hu.shape[2])
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = "CT", series
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*along_row, *along_col)]
        ds.ImagePositionPatient = [f"{v:.10f}" for v in A[:3, :3] @ [0, 0, k] + A[:3, 3]]
        ds.PixelSpacing = [f"{spacing[1]:.10f}", f"{spacing[0]:.10f}"]  # (row, column) spacing
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        stored = np.round((hu[:, :, k].T - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        # no file extension, as many scanners write them
        ds.save_as(folder / f"{prefix}_{n:03d}", enforce_file_format=True)


def test_all_readers_agree_on_world_coordinates(tmp_path):
    import nibabel
    import nrrd

    hu, A = _test_volume()
    reference = Volume.from_array(hu, A)
    np.savez(tmp_path / "ct.npz", hu=hu, affine=A)
    nibabel.save(nibabel.Nifti1Image(hu, RAS_TO_LPS @ A), tmp_path / "ct.nii.gz")
    nrrd.write(str(tmp_path / "ct_ras.nrrd"), hu, {
        "space": "right-anterior-superior", "space directions": (RAS_TO_LPS @ A)[:3, :3].T,
        "space origin": (RAS_TO_LPS @ A)[:3, 3]})
    nrrd.write(str(tmp_path / "ct_lps.nrrd"), hu, {
        "space": "left-posterior-superior", "space directions": A[:3, :3].T, "space origin": A[:3, 3]})
    dicom_dir = tmp_path / "dicom"
    dicom_dir.mkdir()
    _write_dicom_series(dicom_dir, hu, A)
    paths = ["ct.npz", "ct.nii.gz", "ct_ras.nrrd", "ct_lps.nrrd", "dicom", "dicom/img_002"]
    marked = reference.voxel_to_world(np.array(MARK, dtype=float))
    for name in paths:
        vol = load_ct(tmp_path / name)
        np.testing.assert_allclose(_world_of_max(vol), marked, atol=1e-6, err_msg=name)
        _assert_same_patient(vol, reference)
        _assert_same_patient(reference, vol)


def test_dicom_slices_sorted_along_the_normal_and_rescaled(tmp_path):
    hu, A = _test_volume()
    hu = 2.0 * np.round(hu / 2.0)  # representable with slope 2
    A_down = A.copy()  # slices stepping against the row x column normal: the reader reverses k
    A_down[:3, 2] *= -1
    _write_dicom_series(tmp_path, hu, A_down, slope=2.0, intercept=-1000.0)
    vol = load_ct(tmp_path)
    normal = np.cross(vol.affine[:3, 0], vol.affine[:3, 1])
    assert normal @ vol.affine[:3, 2] > 0
    np.testing.assert_array_equal(vol.hu, hu[:, :, ::-1])
    _assert_same_patient(vol, Volume.from_array(hu, A_down))


def test_dicom_folder_problems(tmp_path):
    hu, A = _test_volume()
    two = tmp_path / "two"
    two.mkdir()
    _write_dicom_series(two, hu[:, :, :3], A, uid="1.2.3.1")
    _write_dicom_series(two, hu[:, :, 3:], A, uid="1.2.3.2", prefix="other")
    with pytest.raises(XsimInputError, match="2 DICOM series"):
        load_ct(two)
    assert load_ct(two / "img_000").shape == (5, 4, 3)  # one file selects its series
    gap = tmp_path / "gap"
    gap.mkdir()
    _write_dicom_series(gap, hu, A, shuffle=False)
    (gap / "img_004").unlink()
    with pytest.raises(XsimInputError, match="irregular slice spacing"):
        load_ct(gap)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not dicom")
    with pytest.raises(XsimInputError, match="no DICOM images"):
        load_ct(empty)


def test_same_patient_in_two_orientations():
    hu, A = _test_volume()
    vol = Volume.from_array(hu, A)
    # flip i, then swap j and k: new[i', j', k'] = old[n_i - 1 - i', k', j']
    flipped = np.transpose(hu[::-1], (0, 2, 1))
    M = np.zeros((4, 4))  # old index = M @ new index
    M[0, 0], M[0, 3], M[1, 2], M[2, 1], M[3, 3] = -1.0, hu.shape[0] - 1, 1.0, 1.0, 1.0
    other = Volume.from_array(flipped, A @ M)
    np.testing.assert_allclose(_world_of_max(other), _world_of_max(vol), atol=1e-9)
    _assert_same_patient(other, vol)
    np.testing.assert_allclose(other.world_bounds_mm(), vol.world_bounds_mm(), atol=1e-9)
    pa, pb = vol.to_phantom(), other.to_phantom()
    np.testing.assert_array_equal(pb.material_index, np.transpose(pa.material_index[::-1], (0, 2, 1)))


def test_volume_geometry_helpers():
    hu, A = _test_volume()
    vol = Volume.from_array(hu, A)
    np.testing.assert_allclose(vol.spacing_mm, [0.8, 0.9, 2.5], rtol=1e-12)
    pts = np.random.default_rng(0).uniform(-3, 8, size=(10, 3))
    np.testing.assert_allclose(vol.world_to_voxel(vol.voxel_to_world(pts)), pts, atol=1e-12)
    bounds = vol.world_bounds_mm()
    corners = vol.voxel_to_world(np.array([[-0.5, -0.5, -0.5], [4.5, 3.5, 5.5]]))
    assert (bounds[0] <= corners.min(0) + 1e-9).all() and (bounds[1] >= corners.max(0) - 1e-9).all()
    assert vol.hu.dtype == np.float32 and vol.shape == (5, 4, 6)


def test_volume_input_checks():
    hu, A = _test_volume()
    bad = hu.copy()
    bad[1, 2, 3] = np.nan
    bad[4, 0, 0] = np.nan
    with pytest.raises(XsimInputError, match=r"2 non-finite values.*\(1, 2, 3\)"):
        Volume.from_array(bad, A)
    with pytest.raises(XsimInputError, match="3D"):
        Volume.from_array(hu[0], A)
    with pytest.raises(XsimInputError, match="empty"):
        Volume.from_array(np.zeros((0, 3, 3)), A)
    with pytest.raises(XsimInputError, match="not invertible"):
        Volume.from_array(hu, np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(XsimInputError, match="4x4"):
        Volume.from_array(hu, np.eye(3))
    with pytest.raises(XsimInputError, match="last row"):
        Volume.from_array(hu, np.ones((4, 4)))


def test_load_ct_errors(tmp_path):
    with pytest.raises(XsimInputError, match="does not exist"):
        load_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "ct.mha").write_bytes(b"ObjectType = Image\n")
    with pytest.raises(XsimInputError, match=r"supported CT formats are NIfTI.*DICOM.*NRRD.*npz"):
        load_ct(tmp_path / "ct.mha")
    np.savez(tmp_path / "no_affine.npz", hu=np.zeros((2, 2, 2)))
    with pytest.raises(XsimInputError, match=r"lacks arrays \['affine'\]"):
        load_ct(tmp_path / "no_affine.npz")
    hu, A = _test_volume()
    hu[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", hu=hu, affine=A)
    with pytest.raises(XsimInputError, match="nan.npz"):
        load_ct(tmp_path / "nan.npz")


def test_to_phantom_uses_the_calibration_and_label_overrides():
    hu = np.array([-1000.0, -500.0, -80.0, 40.0, 1200.0, 3000.0]).reshape(6, 1, 1)
    vol = Volume.from_array(hu, np.eye(4))
    cal = HUCalibration.default()
    ph = vol.to_phantom()
    index, density = cal.apply(hu)
    np.testing.assert_array_equal(ph.material_index, index)
    np.testing.assert_array_equal(ph.density_g_cm3, density)
    assert ph.material_names[:5] == [m.name for m in cal.materials]
    assert [ph.material_names[i] for i in ph.material_index.ravel()] == [
        "air", "lung", "adipose", "soft tissue", "cortical bone", "cortical bone"]

    labels = np.zeros(hu.shape, dtype=int)
    labels[5] = 7  # the saturated voxel is a titanium screw
    ph = vol.to_phantom(labels=labels, label_materials={7: "titanium"})
    assert ph.material_names[ph.material_index[5, 0, 0]] == "titanium"
    assert ph.density_g_cm3[5, 0, 0] == pytest.approx(material("titanium").density_g_cm3)
    np.testing.assert_array_equal(ph.density_g_cm3[:5], density[:5])
    with pytest.raises(XsimInputError, match="no voxel of labels has it"):
        vol.to_phantom(labels=labels, label_materials={3: "titanium"})
    with pytest.raises(XsimInputError, match="together"):
        vol.to_phantom(labels=labels)
    with pytest.raises(XsimInputError, match="shape"):
        vol.to_phantom(labels=labels[:3], label_materials={7: "titanium"})


def test_phantom_from_labels():
    labels = np.array([0, 1, 2, 1, 0, 2]).reshape(1, 2, 3)
    mats = ["air", "water", material("cortical bone")]
    ph = Phantom.from_labels(labels, mats, np.eye(4))
    np.testing.assert_allclose(ph.density_g_cm3.ravel(), [0.00120479, 1.0, 1.92, 1.0, 0.00120479, 1.92],
                               rtol=1e-6)
    assert ph.material_index.dtype == np.uint8
    assert ph.material_names == ["air", "water", "cortical bone"]
    ph = Phantom.from_labels(labels, mats, np.eye(4), densities={2: 1.5})
    assert ph.density_g_cm3[0, 0, 2] == pytest.approx(1.5) and ph.density_g_cm3[0, 0, 1] == 1.0
    ph = Phantom.from_labels(labels, mats, np.eye(4), densities=[0.0, 0.9, 1.8])
    assert ph.density_g_cm3[0, 1, 0] == pytest.approx(0.9)
    full = np.arange(6, dtype=float).reshape(1, 2, 3)
    per_voxel = Phantom.from_labels(labels, mats, np.eye(4), full)
    np.testing.assert_array_equal(per_voxel.density_g_cm3, full)
    expected = dict.fromkeys(["air", "water", "cortical bone"], 1 / 3)
    assert ph.material_fractions() == pytest.approx(expected)


def test_phantom_input_checks():
    labels = np.array([0, 1, 2, 3]).reshape(1, 2, 2)
    unknown = r"1 voxels with an unknown material index.*\(0, 1, 1\) = 3"
    with pytest.raises(XsimInputError, match=unknown):
        Phantom.from_labels(labels, ["air", "water", "lung"], np.eye(4))
    mats = ["air", "water", "lung", "adipose"]
    with pytest.raises(XsimInputError, match="negative"):
        Phantom(labels, -np.ones((1, 2, 2)), np.eye(4), mats)
    with pytest.raises(XsimInputError, match="densities"):
        Phantom.from_labels(labels, mats, np.eye(4), densities=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(XsimInputError, match="shape"):
        Phantom(labels, np.ones((2, 2, 2)), np.eye(4), mats)
    with pytest.raises(XsimInputError, match="not invertible"):
        Phantom(labels, np.ones((1, 2, 2)), np.zeros((4, 4)) + np.diag([0, 0, 0, 1.0]), mats)
    with pytest.raises(XsimInputError, match="repeated names"):
        Phantom.from_labels(labels, ["air", "water", "lung", "h2o"], np.eye(4))
    with pytest.raises(XsimInputError, match="integers"):
        Phantom.from_labels(labels + 0.5, mats, np.eye(4))
    with pytest.raises(XsimInputError, match="one value per material"):
        Phantom.from_labels(labels, mats, np.eye(4), densities=[1.0, 2.0])


def test_phantom_save_load_round_trip(tmp_path):
    custom = Material.from_mass_fractions("gadolinium gel", {"H": 0.1, "O": 0.8, "Gd": 0.1}, 1.1)
    labels = np.random.default_rng(3).integers(0, 3, size=(4, 5, 6))
    A = np.diag([0.5, 0.6, 0.7, 1.0])
    A[:3, 3] = [1.0, 2.0, 3.0]
    ph = Phantom(labels, np.random.default_rng(4).uniform(0, 2, labels.shape), A,
                 ["air", "skeletal muscle", custom], landmarks={"tip": (1.0, 2.5, -3.0)})
    path = ph.save(tmp_path / "ph.h5")
    back = Phantom.load(path)
    np.testing.assert_array_equal(back.material_index, ph.material_index)
    np.testing.assert_array_equal(back.density_g_cm3, ph.density_g_cm3)
    np.testing.assert_array_equal(back.affine, ph.affine)
    assert back.materials == ph.materials
    assert back.materials[1] is material("muscle")  # library materials come back as themselves
    np.testing.assert_array_equal(back.landmarks["tip"], [1.0, 2.5, -3.0])
    assert not (tmp_path / "ph.h5.tmp").exists()
    with pytest.raises(XsimInputError, match="does not exist"):
        Phantom.load(tmp_path / "other.h5")
