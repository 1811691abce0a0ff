"""depthmetric.training.data: readers on the real samples, the standard-layout datasets, the samples,
the synthetic scene generator and the augmentations."""
import importlib.metadata
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import depthmetric as dm
from depthmetric.training import data as dd
from depthmetric.training.data.datasets import kb_crop

KITTI_DRIVE = "2011_09_26/2011_09_26_drive_0023_sync"


def _valid(depth):
    return depth[depth > 0]


# --- readers on the real samples ------------------------------------------------------------------------


def test_nyu_reader_units(shared_data):
    folder = shared_data / "metric3d_nyu_demo"
    for index in ("00000", "00050", "00100"):
        image = dd.read_image(folder / "rgb" / f"rgb_{index}.jpg")
        depth = dd.read_depth_png(folder / "depth" / f"sync_depth_{index}.png")
        assert image.shape == (3, 480, 640) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
        assert depth.shape == (1, 480, 640) and depth.dtype == torch.float32
        valid = _valid(depth)
        assert 0.5 < valid.numel() / depth.numel() < 0.9
        assert 1.0 < valid.median().item() < 5.0
        assert valid.max().item() < 10.0


def test_kitti_lidar_and_calibration(shared_data):
    root = shared_data / "kitti_tiny_packnet" / "2011_09_26"
    depth = dd.read_kitti_lidar(root / KITTI_DRIVE[11:] / "proj_depth/velodyne/image_02/0000000003.npz")
    assert depth.shape == (1, 375, 1242) and depth.dtype == torch.float32
    valid = _valid(depth)
    assert 0.01 < valid.numel() / depth.numel() < 0.1
    assert 1.0 < valid.min().item() and valid.max().item() < 85.0
    for camera in (2, 3):
        K = dd.kitti_intrinsics(root / "calib_cam_to_cam.txt", camera)
        cam_txt = np.loadtxt(root / KITTI_DRIVE[11:] / f"image_0{camera}" / "cam.txt")
        assert K.shape == (3, 3) and K.dtype == torch.float32
        np.testing.assert_allclose(K.numpy(), cam_txt, atol=1e-3)
    calib = dd.read_kitti_calib(root / "calib_cam_to_cam.txt")
    assert "calib_time" not in calib and calib["P_rect_03"].shape == (12,)


def test_pgm_is_read_big_endian(tmp_path, shared_data):
    values = np.array([[0, 1, 256], [258, 4660, 65535]], dtype=np.uint16)
    path = tmp_path / "depth.pgm"
    path.write_bytes(b"P5\n# a comment\n3 2\n65535\n" + values.astype(">u2").tobytes())
    np.testing.assert_array_equal(dd.read_pgm(path), values)
    depth = dd.read_kinect_depth(path)
    torch.testing.assert_close(depth, torch.from_numpy(values.astype(np.float32) / 1000)[None])
    path.write_bytes(b"P2\n3 2\n255\n")
    with pytest.raises(ValueError, match="binary PGM"):
        dd.read_pgm(path)
    # the real Kinect frames: little-endian decoding would give a median of tens of metres
    seq = dd.read_kinect_sequence(shared_data / "slambook2_rgbd_ch5")
    assert seq["images"].shape == (5, 3, 480, 640) and seq["depths"].shape == (5, 1, 480, 640)
    for depth in seq["depths"]:
        assert 0.5 < _valid(depth).median().item() < 5.0
    assert seq["poses"].shape == (5, 4, 4)
    R = seq["poses"][:, :3, :3].double()
    identity = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), identity, atol=1e-6, rtol=0)
    torch.testing.assert_close(seq["poses"][0, :3, 3], torch.tensor([-0.228993, 0.00645704, 0.0287837]))


def test_quaternion_convention():
    # 90 degrees about z: qz = qw = sqrt(1/2); x -> y
    R = dd.quaternion_to_matrix(np.array([[0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]]))[0]
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_middlebury_pfm(shared_data):
    sample = dd.read_middlebury(shared_data / "middlebury2014Q_motorcycle_sttr")
    assert sample["image"].shape == (3, 497, 741) and sample["depth"].shape == (1, 497, 741)
    valid = _valid(sample["depth"])
    assert valid.numel() > 0.5 * sample["depth"].numel()
    assert 1.0 < valid.median().item() < 5.0  # the motorcycle stands 1-3 m from the rig
    torch.testing.assert_close(sample["K"][0, 0], torch.tensor(999.421))


def test_pfm_rows_and_endianness(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "d.pfm"
    # little-endian (negative scale), rows stored bottom-up
    path.write_bytes(b"Pf\n3 2\n-1.0\n" + np.flipud(array).astype("<f4").tobytes())
    np.testing.assert_array_equal(dd.read_pfm(path), array)
    path.write_bytes(b"Pf\n3 2\n1.0\n" + np.flipud(array).astype(">f4").tobytes())
    np.testing.assert_array_equal(dd.read_pfm(path), array)


# --- full data set layouts --------------------------------------------------------------------------------


def test_nyu_dataset_on_a_bts_layout(tmp_path, shared_data):
    source = shared_data / "metric3d_nyu_demo"
    lines = []
    for index in ("00000", "00050"):
        scene = tmp_path / "sync" / f"kitchen_{index}"
        scene.mkdir(parents=True)
        shutil.copy(source / "rgb" / f"rgb_{index}.jpg", scene)
        shutil.copy(source / "depth" / f"sync_depth_{index}.png", scene)
        lines.append(f"/kitchen_{index}/rgb_{index}.jpg /kitchen_{index}/sync_depth_{index}.png 518.8579")
    split = tmp_path / "nyudepthv2_train_files_with_gt.txt"
    split.write_text("\n".join(lines) + "\n\n")
    ds = dd.NYUDepthV2(tmp_path / "sync", split)
    assert len(ds) == 2
    item = ds[1]
    assert set(item) == {"image", "depth", "K"}
    torch.testing.assert_close(item["depth"], dd.read_depth_png(source / "depth" / "sync_depth_00050.png"))
    torch.testing.assert_close(item["K"], dd.intrinsics(518.8579, 519.46961, 325.58245, 253.73617))
    split.write_text("rgb.jpg depth.png\n")
    with pytest.raises(ValueError, match="image_path depth_path focal"):
        dd.NYUDepthV2(tmp_path / "sync", split)


@pytest.fixture
def kitti_layout(tmp_path, shared_data):
    """KITTI raw root + annotated-depth root as BTS expects them, filled with the real frames."""
    source = shared_data / "kitti_tiny_packnet" / "2011_09_26"
    raw = tmp_path / "raw"
    frames = raw / KITTI_DRIVE / "image_02" / "data"
    frames.mkdir(parents=True)
    shutil.copy(source / "calib_cam_to_cam.txt", raw / "2011_09_26")
    gt = tmp_path / "data_depth_annotated" / KITTI_DRIVE[11:] / "proj_depth" / "groundtruth" / "image_02"
    gt.mkdir(parents=True)
    for i in (2, 3, 4):
        name = f"{i:010d}"
        shutil.copy(source / KITTI_DRIVE[11:] / "image_02" / "data" / f"{name}.png", frames)
        lidar = np.load(source / KITTI_DRIVE[11:] / "proj_depth/velodyne/image_02" / f"{name}.npz")["velodyne_depth"]
        Image.fromarray(np.round(lidar * 256).astype(np.uint16)).save(gt / f"{name}.png")
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text(
        f"{KITTI_DRIVE}/image_02/data/0000000003.png "
        f"{KITTI_DRIVE[11:]}/proj_depth/groundtruth/image_02/0000000003.png 721.5377\n"
        f"{KITTI_DRIVE}/image_02/data/0000000004.png None 721.5377\n"
    )
    return raw, tmp_path / "data_depth_annotated", split, source


def test_kitti_eigen_dataset(kitti_layout):
    raw, depth_root, split, source = kitti_layout
    ds = dd.KITTIEigen(raw, split, depth_root=depth_root)
    assert len(ds) == 1  # the line without ground truth is skipped
    item = ds[0]
    lidar = dd.read_kitti_lidar(source / KITTI_DRIVE[11:] / "proj_depth/velodyne/image_02/0000000003.npz")
    assert item["image"].shape == (3, 375, 1242)
    torch.testing.assert_close(item["depth"], lidar, atol=1 / 512, rtol=0)  # uint16 PNG at 1/256 m
    torch.testing.assert_close(item["K"], dd.kitti_intrinsics(raw / "2011_09_26" / "calib_cam_to_cam.txt"))
    assert len(dd.KITTIEigen(raw, split, depth_root=depth_root, require_depth=False)) == 2

    cropped = dd.KITTIEigen(raw, split, depth_root=depth_root, kb_crop=True, sources=(-1, 1))[0]
    top, left = 375 - 352, (1242 - 1216) // 2
    assert cropped["image"].shape == (3, 352, 1216) and cropped["sources"].shape == (2, 3, 352, 1216)
    torch.testing.assert_close(cropped["depth"], item["depth"][:, top:, left : left + 1216])
    torch.testing.assert_close(cropped["K"][:2, 2], item["K"][:2, 2] - torch.tensor([left, top], dtype=torch.float32))
    previous = dd.read_image(raw / KITTI_DRIVE / "image_02/data/0000000002.png")
    torch.testing.assert_close(cropped["sources"][0], previous[:, top:, left : left + 1216])
    with pytest.raises(ValueError, match="smaller than the KITTI benchmark crop"):
        kb_crop({"image": torch.zeros(3, 300, 1000), "K": torch.eye(3)})
    (raw / "2011_09_26" / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match="calib_cam_to_cam"):
        dd.KITTIEigen(raw, split, depth_root=depth_root)[0]


# --- the samples (the depthmetric-samples distribution) ----------------------------------------------------


def test_samples():
    nyu = dd.load_samples("nyu")
    assert len(nyu) == 3
    for item in nyu:
        assert item["image"].shape == (3, 480, 640) and item["depth"].shape == (1, 480, 640)
        assert item["K"].shape == (3, 3) and item["image"].dtype == item["depth"].dtype == torch.float32
        assert 1.0 < _valid(item["depth"]).median().item() < 5.0
    kitti = dd.load_samples("kitti")
    assert len(kitti) == 5
    assert all(1.0 < _valid(item["depth"]).min().item() and _valid(item["depth"]).max() < 85 for item in kitti)
    sequence = dd.load_samples("kitti", sequence=True)
    assert len(sequence) == 3
    item = sequence[0]
    assert item["sources"].shape == (2, 3, 375, 1242)
    torch.testing.assert_close(item["sources"][0], kitti[0]["image"])  # frame 1 precedes frame 2
    torch.testing.assert_close(item["image"], kitti[1]["image"])
    total = sum(f.stat().st_size for f in dd.SAMPLES_DIR.rglob("*") if f.is_file())
    assert total < 10 * 2**20
    assert (dd.SAMPLES_DIR / "kitti" / "LICENSE.md").is_file()
    tum = dd.load_samples("tum")  # the held-out indoor pairs of the NYU runs: TUM depth is metres x 5000
    assert len(tum) == 2 and all(item["image"].shape == (3, 480, 640) for item in tum)
    assert all(0.5 < _valid(item["depth"]).median().item() < 5.0 for item in tum)
    assert (dd.SAMPLES_DIR / "tum" / "SOURCE_LICENSE.txt").is_file()
    with pytest.raises(ValueError, match="kind"):
        dd.load_samples("middlebury")
    with pytest.raises(ValueError, match="no frame sequence"):
        dd.load_samples("nyu", sequence=True)


def test_samples_distribution_states_the_datasets_terms():
    meta = importlib.metadata.metadata("depthmetric-samples")
    assert {"CC-BY-NC-SA-3.0", "CC-BY-4.0"} <= set(meta["License-Expression"].split(" AND "))
    readme = meta["Description"]  # the README: provenance, terms and citations
    assert "non-commercial" in readme and "Silberman" in readme and "Geiger" in readme and "Sturm" in readme
    assert {"kitti/LICENSE.md", "nyu/SOURCE_LICENSE.txt", "tum/SOURCE_LICENSE.txt"} <= {
        "/".join(pathlib.PurePath(f).parts[-2:]) for f in meta.get_all("License-File")}


def test_load_samples_without_the_samples_says_what_to_install(monkeypatch):
    monkeypatch.setattr(dd.samples, "SAMPLES_DIR", None)
    with pytest.raises(dd.SamplesNotInstalled, match=r"pip install \./samples.*--data-root"):
        dd.load_samples("nyu")


def test_nyu_runs_evaluate_on_held_out_frames():
    from depthmetric.training import TrainConfig, load_data

    train_set, eval_set, preset = load_data(TrainConfig().resolved())
    assert preset == "nyu" and len(train_set) == 3 and len(eval_set) == 2
    assert not any(torch.equal(a["image"], b["image"]) for a in train_set for b in eval_set)


# --- synthetic scenes ---------------------------------------------------------------------------------------


def test_fronto_parallel_plane_depth_is_exact():
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    plane = dd.synthetic.Plane(np.array([0.0, 0.0, 3.25]), np.array([0.0, 0.0, -1.0]))
    image, depth = dd.render([plane], np.eye(4), K, 48, 64)
    assert image.shape == (3, 48, 64) and depth.shape == (1, 48, 64)
    assert torch.equal(depth, torch.full_like(depth, 3.25))
    # a tilted plane z = 3 + 0.1 * X: depth = 3 / (1 - 0.1 * (x - cx) / fx), exactly
    tilted = dd.synthetic.Plane(np.array([0.0, 0.0, 3.0]), np.array([-0.1, 0.0, 1.0]))
    _, depth = dd.render([tilted], np.eye(4), K, 48, 64)
    x = torch.arange(64, dtype=torch.float64)
    torch.testing.assert_close(depth[0, 7].double(), 3 / (1 - 0.1 * (x - 31.5) / 50), atol=1e-6, rtol=0)


def test_two_views_of_a_smooth_plane_warp_exactly():
    """Smooth texture, no occlusion: the exact pose and depth explain the source view to interpolation error."""
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    texture = dd.synthetic.Texture(waves=np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0]]))
    plane = dd.synthetic.Plane(np.array([0.0, 0.0, 4.0]), np.array([0.2, 0.1, -1.0]), texture)
    source_pose = np.eye(4)
    source_pose[:3, :3] = dd.synthetic.axis_angle_to_matrix([0.01, -0.03, 0.02])
    source_pose[:3, 3] = [0.15, -0.05, 0.1]
    target, depth = dd.render([plane], np.eye(4), K, 60, 80)
    source, _ = dd.render([plane], source_pose, K, 60, 80)
    T = torch.from_numpy(np.linalg.inv(source_pose)).float()[None]
    warped = dm.warp(source[None], depth[None], T, torch.from_numpy(K).float())
    interior = (warped - target[None]).abs()[..., 8:-8, 8:-8]
    assert interior.max().item() < 2e-3
    assert (source - target).abs()[..., 8:-8, 8:-8].mean() > 20 * interior.mean()


def test_synthetic_scenes_samples_and_exact_geometry():
    ds = dd.SyntheticScenes(3, height=48, width=64, sources=2, seed=7)
    item = ds[1]
    assert set(item) == {"image", "depth", "labels", "K", "sources", "poses"}
    assert item["image"].shape == (3, 48, 64) and item["sources"].shape == (2, 3, 48, 64)
    assert item["poses"].shape == (2, 4, 4) and item["depth"].shape == (1, 48, 64)
    assert all(t.dtype == torch.float32 for k, t in item.items() if k != "labels")
    assert item["labels"].shape == (48, 64) and item["labels"].dtype == torch.int64
    assert (item["depth"] > 0).all() and item["image"].std() > 0.05
    # deterministic per (seed, index); a different seed is a different scene
    again = dd.SyntheticScenes(3, height=48, width=64, sources=2, seed=7)[1]
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(item["image"], dd.SyntheticScenes(3, height=48, width=64, seed=8)[1]["image"])
    assert "sources" not in dd.SyntheticScenes(1, height=8, width=8, sources=0)[0]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["sources"].shape == (2, 2, 3, 48, 64) and batch["poses"].shape == (2, 2, 4, 4)
    with pytest.raises(IndexError):
        ds[3]


def _warp_error(sample, source=0, perturb=0.0):
    T = sample["poses"][source].clone()
    T[0, 3] += perturb
    warped = dm.warp(sample["sources"][source][None], sample["depth"][None], T[None], sample["K"])
    return (warped - sample["image"][None]).abs().mean(1)[0, 6:-6, 6:-6]


def test_synthetic_warp_with_exact_pose_and_depth():
    ds = dd.SyntheticScenes(4, height=72, width=96, seed=0)
    for index in range(len(ds)):
        sample = ds[index]
        for source in range(2):
            exact, wrong = _warp_error(sample, source), _warp_error(sample, source, perturb=0.1)
            # what is left is bilinear interpolation across texture, shading and occlusion edges
            assert exact.median() < 0.01 and exact.mean() < 0.02, (index, source)
            assert exact.mean() < 0.4 * wrong.mean(), (index, source)


# --- augmentations ---------------------------------------------------------------------------------------------


@pytest.fixture
def scene_sample():
    return dd.SyntheticScenes(1, height=60, width=80, seed=3)[0]


def test_flip_keeps_geometry_consistent(scene_sample):
    flip = dd.RandomHorizontalFlip(p=1.0)
    flipped = flip(scene_sample)
    assert torch.equal(flipped["image"], scene_sample["image"].flip(-1))
    assert torch.equal(flipped["depth"], scene_sample["depth"].flip(-1))
    assert torch.equal(flipped["sources"], scene_sample["sources"].flip(-1))
    assert flipped["K"][0, 2].item() == pytest.approx(80 - 1 - scene_sample["K"][0, 2].item())
    # the flipped K and poses still explain the flipped source views
    for source in range(2):
        assert _warp_error(flipped, source).mean().item() == pytest.approx(
            _warp_error(scene_sample, source).mean().item(), abs=2e-3
        )
    twice = flip(flipped)
    assert all(torch.allclose(twice[k], scene_sample[k]) for k in scene_sample)
    assert torch.equal(dd.RandomHorizontalFlip(p=0.0)(scene_sample)["image"], scene_sample["image"])


def test_random_crop_keeps_geometry_consistent(scene_sample):
    g = torch.Generator().manual_seed(0)
    cropped = dd.RandomCrop(40, 56)(scene_sample, g)
    assert cropped["image"].shape == (3, 40, 56) and cropped["sources"].shape == (2, 3, 40, 56)
    # find the offset from K and check every map was cut at it
    left = int(round((scene_sample["K"][0, 2] - cropped["K"][0, 2]).item()))
    top = int(round((scene_sample["K"][1, 2] - cropped["K"][1, 2]).item()))
    for key in ("image", "depth", "sources"):
        assert torch.equal(cropped[key], scene_sample[key][..., top : top + 40, left : left + 56])
    # K stays consistent: wherever the cropped view's projection stays inside the crop, warping the crop
    # gives exactly the crop of the full warp
    for source in range(2):
        T = scene_sample["poses"][source][None]
        full = dm.warp(scene_sample["sources"][source][None], scene_sample["depth"][None], T, scene_sample["K"])
        part = dm.warp(cropped["sources"][source][None], cropped["depth"][None], T, cropped["K"])
        points = dm.backproject(cropped["depth"][None], torch.linalg.inv(cropped["K"]))
        inside = (dm.project(points, cropped["K"], T, 40, 56).abs() <= 1).all(-1)[:, None].expand_as(part)
        assert inside.float().mean() > 0.5
        expected = full[..., top : top + 40, left : left + 56]
        torch.testing.assert_close(part[inside], expected[inside], atol=1e-4, rtol=0)
    again = dd.RandomCrop(40, 56)(scene_sample, torch.Generator().manual_seed(0))
    assert torch.equal(again["image"], cropped["image"])
    with pytest.raises(ValueError, match="cannot crop"):
        dd.RandomCrop(100, 10)(scene_sample, g)


def test_color_jitter_touches_colour_only(scene_sample):
    sample = dict(scene_sample)
    sample["sources"] = torch.stack([sample["image"], sample["sources"][1]])
    jitter = dd.ColorJitter(0.3, 0.3, 0.3)
    out = jitter(sample, torch.Generator().manual_seed(1))
    assert torch.equal(out["depth"], sample["depth"]) and torch.equal(out["K"], sample["K"])
    assert not torch.allclose(out["image"], sample["image"], atol=1e-3)
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    torch.testing.assert_close(out["sources"][0], out["image"])  # the same factors on every frame
    composed = dd.Compose([dd.ColorJitter(0.3, 0.3, 0.3), dd.RandomHorizontalFlip()])
    a = composed(sample, torch.Generator().manual_seed(5))
    b = composed(sample, torch.Generator().manual_seed(5))
    assert torch.equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="brightness"):
        dd.ColorJitter(brightness=1.5)


def test_synthetic_labels_are_the_surface_each_pixel_sees():
    """Labels: floor, ceiling, wall, box (dd.synthetic.CLASSES) from the primitive the ray hits first, 255 where
    it hits none; a pixel labelled floor has the depth of the floor plane along its ray."""
    ds = dd.SyntheticScenes(2, height=48, width=64, sources=0, seed=3)
    assert ds.classes == dd.synthetic.CLASSES == ("floor", "ceiling", "wall", "box")
    item = ds[0]
    labels = item["labels"]
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert {0, 2}.issubset(labels.unique().tolist())  # a room: floor and walls in view
    assert torch.equal(labels == 255, item["depth"][0] == 0)
    # the bottom rows see the floor, the top rows the ceiling (camera tilt is a few degrees)
    assert (labels[-1] == 0).float().mean() > 0.5 and (labels[0] == 1).float().mean() > 0.5
    # render's index map: -1 where nothing is hit
    plane = dd.synthetic.Plane(np.array([0.0, 0.0, 3.0]), np.array([0.0, 0.0, -1.0]))
    sky = dd.synthetic.Plane(np.array([0.0, 0.0, -3.0]), np.array([0.0, 0.0, 1.0]))  # behind the camera
    K = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    _, depth, index = dd.render([sky, plane], np.eye(4), K, 24, 32, return_index=True)
    assert (index == 1).all() and (depth > 0).all()
    _, _, index = dd.render([sky], np.eye(4), K, 24, 32, return_index=True)
    assert (index == -1).all()


def test_augmentations_carry_the_labels():
    item = dd.SyntheticScenes(1, height=48, width=64, sources=0, seed=1)[0]
    flipped = dd.RandomHorizontalFlip(p=1.0)(item)
    assert torch.equal(flipped["labels"], item["labels"].flip(-1))
    cropped = dd.augment.crop(item, 4, 8, 32, 40)
    assert torch.equal(cropped["labels"], item["labels"][4:36, 8:48])
    small = dd.augment.resize(item, 24, 32)
    assert small["labels"].shape == (24, 32) and small["labels"].dtype == torch.int64
    assert torch.equal(small["labels"], item["labels"][::2, ::2])  # nearest: a class is never blended
