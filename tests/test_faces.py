"""dldl.faces: detection on bundled photos (the default YuNet in ONNX Runtime, and yuface where it is
installed), YuNet's decoding, the detector's card, similarity estimation and alignment, errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dldl
from conftest import UTKFACE, needs_shared
from dldl.errors import CheckpointError, DldlError
from dldl.faces import (
    TEMPLATES,
    Detector,
    Face,
    OnnxYuNetDetector,
    ScaledDetector,
    align_face,
    alignment_matrix,
    detect_and_align,
    estimate_similarity,
    get_detector,
    invert_affine,
    transform_points,
    warp_affine,
    yunet,
)

PHOTOS = Path(dldl.__file__).resolve().parent / "assets" / "photos"
EXPECTED_FACES = {  # photo -> number of faces the default detector must find
    "steward-masweneng-Ws4YEqBafus-unsplash.jpg": 2,
    "suzana-sousa-IC1_YWQn6so-unsplash.jpg": 2,
    "anastasiya-pavlova-v6XumrQC1NA-unsplash.jpg": 1,
}


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty]])


def smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """``(size, size, 3)`` uint8 of a few wide Gaussian blobs: interpolation barely changes it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(np.float64)
    img = np.full((size, size, 3), 40.0)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 12, size / 6)
        img += rng.uniform(20, 80, 3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


@pytest.fixture(scope="module")
def detector() -> Detector:
    return get_detector()  # the default: YuNet in ONNX Runtime, nothing to install


@pytest.fixture(scope="module")
def yuface_detector() -> Detector:
    pytest.importorskip("yuface", reason="yuface (the optional compiled detector) is not installed: pip install yuface",
                        exc_type=ImportError)
    return get_detector("yuface")


# --- detection ------------------------------------------------------------------------------------


def test_bundled_photos_are_attributed_and_small():
    files = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    assert files == sorted(EXPECTED_FACES)
    attribution = (PHOTOS / "ATTRIBUTION.md").read_text()
    for name in files:
        photo_id = name.removesuffix("-unsplash.jpg")[-11:]
        assert f"https://unsplash.com/photos/{photo_id}" in attribution
        assert max(Image.open(PHOTOS / name).size) <= 512
    assert sum(p.stat().st_size for p in PHOTOS.iterdir()) < 300_000


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_detects_faces_with_sane_geometry(detector, name):
    image = load(name)
    faces = detector.detect(image)
    assert len(faces) == EXPECTED_FACES[name]
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    h, w = image.shape[:2]
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert 0.7 <= face.score <= 1.0
        assert 20 <= x1 - x0 <= w and 20 <= y1 - y0 <= h
        assert -0.3 * (x1 - x0) <= x0 < x1 <= w + 0.3 * (x1 - x0)  # a face cut by the border may overhang
        lm = face.landmarks
        assert lm.shape == (5, 2) and not lm.flags.writeable
        margin = 0.05 * np.array([x1 - x0, y1 - y0])  # the box is clipped to the image, the points not
        assert np.all((lm >= np.array([x0, y0]) - margin) & (lm <= np.array([x1, y1]) + margin))
        left_eye, right_eye, nose, mouth_left, mouth_right = lm
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def _rss_mb() -> float:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024


def _keeps_no_memory(detector: Detector, calls: int = 3000) -> None:
    small = np.ascontiguousarray(smooth_image(96)[:, :, ::-1])
    detector.detect(small[:, :, ::-1])
    before = _rss_mb()
    for _ in range(calls):
        detector.detect(small)
    assert _rss_mb() - before < 4, f"{_rss_mb() - before:.1f} MB kept by {calls:,} detections"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc")
def test_detection_keeps_no_memory(detector):
    """3,000 calls of the default detector keep under 4 MB (``dldl serve`` detects a photo a request)."""
    _keeps_no_memory(detector)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc")
def test_yuface_keeps_no_memory_and_gives_the_wheels_rows(yuface_detector):
    """yuface's own ``c_detect`` allocates a 36,864-byte result buffer a call and never frees it (3,000
    calls: +104 MB; ``dldl serve`` grew 36 KB a photo). dldl calls the library into one reused buffer:
    the same rows on the bundled photos, and 3,000 calls keep under 4 MB. Skipped without the optional
    ``yuface`` (the README's developer install does not include it)."""
    import yuface

    from dldl.faces.detect import _facedetect_cnn

    direct = _facedetect_cnn(yuface)
    assert direct is not None, "libfacedetection's facedetect_cnn not found in the yuface wheel"
    for name in EXPECTED_FACES:
        bgr = np.ascontiguousarray(load(name)[::2, ::2, ::-1])
        assert np.array_equal(direct(bgr)[:, :15], np.asarray(yuface.c_detect(bgr))[:, :15])  # the 16th is unset
    _keeps_no_memory(yuface_detector)


def test_no_face_in_blank_or_noise(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.zeros((96, 128, 3), np.uint8)) == []  # (all-black frames are slow: small)
    assert detector.detect(np.full((100, 100, 3), 200, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)) == []
    assert detect_and_align(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), detector) == []


def test_large_image_is_downscaled_and_mapped_back(detector):
    name = "suzana-sousa-IC1_YWQn6so-unsplash.jpg"
    small = load(name)
    big = np.asarray(Image.fromarray(small).resize((1500, 1500), Image.BICUBIC))
    ref, faces = detector.detect(small), detector.detect(big)
    assert len(faces) == len(ref) == 2
    # 1500 px is detected at 640 px and the results come back in 1500 px coordinates; the 2nd face is
    # cut by the border, so it moves more with the scale: compare it by overlap only.
    side = ref[0].width * 3
    assert np.allclose(np.array(faces[0].box), (np.array(ref[0].box) + 0.5) * 3 - 0.5, atol=0.1 * side)
    assert np.allclose(faces[0].landmarks, (ref[0].landmarks + 0.5) * 3 - 0.5, atol=0.1 * side)
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = ((np.array(ref[1].box) + 0.5) * 3 - 0.5), faces[1].box
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    assert inter / (ref[1].area * 9 + faces[1].area - inter) > 0.5


def test_detector_is_a_detector_and_validates_input(detector):
    assert isinstance(detector, Detector)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*shape \(50, 60\)"):
        detector.detect(np.zeros((50, 60), np.uint8))
    with pytest.raises(ValueError, match="dtype float64"):
        detector.detect(np.zeros((50, 60, 3)))


def test_detect_and_align_on_photo(detector):
    image = load("steward-masweneng-Ws4YEqBafus-unsplash.jpg")
    pairs = detect_and_align(image, detector, template="mebeauty", output_size=224)
    assert len(pairs) == 2
    for face, crop in pairs:
        assert isinstance(face, Face) and crop.shape == (224, 224, 3) and crop.dtype == np.uint8


def test_realigned_photo_faces_land_on_template(detector):
    """Re-detecting on an aligned crop finds the landmarks on the template, up to detector noise."""
    image = load("anastasiya-pavlova-v6XumrQC1NA-unsplash.jpg")  # a tilted head
    (face, crop), = detect_and_align(image, detector, output_size=200)
    m = alignment_matrix(face.landmarks, "utkface", 200)
    assert math.degrees(abs(math.atan2(m[1, 0], m[0, 0]))) > 10  # it really was rotated
    padded = np.pad(crop, ((50, 50), (50, 50), (0, 0)), mode="reflect")  # context, as in a photo
    again = max(detector.detect(padded), key=lambda f: f.score)
    error = np.linalg.norm(again.landmarks - 50 - (TEMPLATES["utkface"] * 200 - 0.5), axis=1)
    assert error.mean() < 0.05 * 200, error


def test_landmarks_agree_with_yuface(detector, yuface_detector):
    """yuface compiles the same network (yunet_s): the same faces and scores, landmarks within ~2 px
    (yuface floors its outputs to whole pixels and percents), each photo searched at its working
    side (detect() may stop at the coarse search for one and not the other, on a floored score)."""
    for name in EXPECTED_FACES:
        image = load(name)
        side = detector.working_side(max(image.shape[:2]))
        ours, theirs = (d._search(image, side, d.min_score) for d in (detector, yuface_detector))
        assert len(ours) == len(theirs) == EXPECTED_FACES[name]
        for a, b in zip(ours, theirs):
            assert np.abs(a.landmarks - b.landmarks).max() < 2.5, name
            assert np.abs(np.subtract(a.box, b.box)).max() < 4.0, name
            assert 0 <= a.score - b.score < 0.011, name


def test_min_score_zero_keeps_libfacedetection_s_floor():
    """yuface never reports a face under 0.2 (libfacedetection's own threshold); without that floor
    the ONNX graph gave ~1,900 candidates for a photo of two faces."""
    faces = get_detector(min_score=0.0, min_size=0).detect(load("steward-masweneng-Ws4YEqBafus-unsplash.jpg"))
    assert len(faces) == 2 and min(f.score for f in faces) >= yunet.SCORE_FLOOR == 0.2


def _heads(height: int, width: int) -> dict[str, np.ndarray]:
    """YuNet's outputs for a ``(height, width)`` input, all zero (no face anywhere)."""
    out = {}
    for s in yunet.STRIDES:
        n = (height // s) * (width // s)
        out |= {f"cls_{s}": np.zeros((1, n, 1), np.float32), f"obj_{s}": np.zeros((1, n, 1), np.float32),
                f"bbox_{s}": np.zeros((1, n, 4), np.float32), f"kps_{s}": np.zeros((1, n, 10), np.float32)}
    return out


def test_yunet_decodes_a_synthetic_head_to_its_box_and_points():
    out = _heads(64, 96)
    i = 2 * (96 // 16) + 3  # stride 16, row 2, column 3: the anchor point (48, 32)
    out["cls_16"][0, i], out["obj_16"][0, i] = 0.81, 1.0  # score sqrt(cls * obj) = 0.9
    out["bbox_16"][0, i] = [0.25, -0.5, math.log(2), math.log(3)]  # centre (52, 24), size 32 x 48
    out["kps_16"][0, i] = np.arange(10) / 10
    out["cls_8"][0, 5], out["obj_8"][0, 5] = 0.5, 0.5  # a weak one elsewhere: 0.5
    scores, boxes, points = yunet.decode(out, 64, 96, min_score=0.6)
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(boxes, [[36, 0, 68, 48]], atol=1e-5)
    np.testing.assert_allclose(points[0], np.array([48, 32]) + 16 * np.arange(10).reshape(5, 2) / 10, atol=1e-5)
    assert len(yunet.decode(out, 64, 96, min_score=0.4)[0]) == 2
    assert len(yunet.decode(out, 64, 96, min_score=0.95)[0]) == 0
    assert yunet.to_input(np.zeros((50, 90, 3), np.uint8)).shape == (1, 3, 64, 96)  # padded to the largest stride
    rgb = np.zeros((1, 1, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    assert yunet.to_input(rgb)[0, :, 0, 0].tolist() == [30, 20, 10]  # BGR, 0..255


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 20], [50, 50, 60, 60.]])
    keep = yunet.nms(boxes, np.array([0.7, 0.9, 0.8, 0.6]), iou=0.45)
    assert keep.tolist() == [1, 2, 3]  # box 0 overlaps box 1 by 0.82; box 2 overlaps box 1 by 0.43
    assert yunet.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_scaled_detector_maps_back_filters_and_sorts():
    class Stub(ScaledDetector):
        def _raw(self, image, min_score):
            self.seen = image.shape
            boxes = np.array([[10, 10, 30, 40], [0, 0, 50, 50], [100, 100, 108, 110], [200, 200, 260, 260.]])
            return np.array([0.9, 0.6, 0.8, 0.75]), boxes, np.zeros((4, 5, 2)) + [15, 20]

    det = Stub(min_score=0.7, max_side=640, min_size=20)
    faces = det.detect(np.zeros((960, 1280, 3), np.uint8))
    assert det.seen == (480, 640, 3)  # searched at 640 px: a 20 px face is still 10 px there
    # 0.6 is under min_score, the 8 px box is 17 px in the photo (< min_size); largest first, pixel centres mapped
    assert [f.box for f in faces] == [(400.5, 400.5, 520.5, 520.5), (20.5, 20.5, 60.5, 80.5)]
    assert faces[1].landmarks[0].tolist() == [30.5, 40.5] and faces[1].score == 0.9


@pytest.mark.parametrize("found, sides", [
    ([(0.9, 100)], [320]),  # one clear, large face: the coarse answer stands
    ([(0.9, 100), (0.6, 40)], [320, 480]),  # something scored just under min_score: searched again
    ([(0.9, 100), (0.3, 40)], [320]),  # far under min_score: not a doubt
    ([(0.9, 40)], [320, 480]),  # a face too small at the coarse side for good landmarks: again
    ([], [320]),  # nothing at all: no second search
])
def test_a_photo_is_searched_coarse_first_and_again_at_the_working_side_when_in_doubt(found, sides):
    """A 640 px photo is searched at 320 px (a 20 px face is 10 px there), and again at 480 px only
    when the coarse search scored something within DOUBT under min_score or found a face under
    COARSE_FACE px; the answer is always that of the last search."""
    class Stub(ScaledDetector):
        def __init__(self):
            super().__init__(min_score=0.7, max_side=640, min_size=20)
            self.sides = []

        def _raw(self, image, min_score):
            self.sides.append(max(image.shape[:2]))
            boxes = np.array([[0, 0, w, w] for _, w in found], dtype=float).reshape(-1, 4)
            scores = np.array([s for s, _ in found], dtype=float)
            keep = scores >= min_score
            return scores[keep], boxes[keep], np.zeros((len(found), 5, 2))[keep]

    det = Stub()
    faces = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert det.sides == sides
    scale = 640 / sides[-1]
    assert [f.width for f in faces] == pytest.approx([w * scale for s, w in found if s >= 0.7 and w * scale >= 20])


def test_the_detector_network_is_checked_against_its_card(tmp_path, monkeypatch):
    card = yunet.model_card()
    assert card["licence"] == "Apache-2.0" and card["source"]["commit"] and card["input"]["channels"] == "BGR"
    assert (yunet.DETECTORS_DIR / card["licence_file"]).is_file()
    for f in yunet.DETECTORS_DIR.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = bytearray((tmp_path / card["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / card["file"]).write_bytes(bytes(data))
    monkeypatch.setattr(yunet, "DETECTORS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"yunet_s\.onnx: sha256 does not match its card.*reinstall dldl") as e:
        get_detector()
    assert "\n" not in str(e.value) and isinstance(e.value, DldlError)  # the CLI prints it as one line
    with pytest.raises(CheckpointError, match=r"no shipped face detector network 'yunet_x' \(shipped: yunet_s\)"):
        get_detector(model="yunet_x")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not an ONNX graph ONNX Runtime can load"):
        get_detector(model=tmp_path / "junk.onnx")


# --- similarity and warping -----------------------------------------------------------------------


@pytest.mark.parametrize("params", [(1.0, 0.0, 0.0, 0.0), (0.37, 23.0, -5.0, 140.0), (2.5, -170.0, 30.0, 7.5)])
def test_estimate_similarity_is_exact_on_noise_free_points(params):
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (7, 2))
    true = similarity(*params)
    est = estimate_similarity(src, transform_points(src, true))
    np.testing.assert_allclose(est, true, atol=1e-9)
    np.testing.assert_allclose(invert_affine(est) @ np.r_[est, [[0, 0, 1]]], np.eye(3)[:2], atol=1e-9)


def test_estimate_similarity_is_least_squares():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, (5, 2))
    dst = transform_points(src, similarity(0.8, 12.0, 3.0, -4.0)) + rng.normal(0, 2, (5, 2))
    best = estimate_similarity(src, dst)
    cost = lambda m: np.sum((transform_points(src, m) - dst) ** 2)  # noqa: E731
    for _ in range(50):  # any nearby similarity fits worse
        a, b = best[0, 0] + rng.normal(0, 0.01), best[1, 0] + rng.normal(0, 0.01)
        t = best[:, 2] + rng.normal(0, 0.3, 2)
        assert cost(np.array([[a, -b, t[0]], [b, a, t[1]]])) >= cost(best)


def test_warp_identity_and_integer_shift_are_exact():
    image = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(warp_affine(image, similarity(1, 0, 0, 0), 40), image)
    assert np.array_equal(warp_affine(image, similarity(1, 0, -3, -5), 30), image[5:35, 3:33])
    assert np.all(warp_affine(image, similarity(1, 0, 500, 0), 16) == 0)  # crop misses the image: fill


@pytest.mark.parametrize("scale", [1.6, 0.7, 0.12])  # 0.12: box-reduced by 8 before the bicubic warp
def test_warp_moves_a_point_where_the_matrix_says(scale):
    size = 800
    y, x = np.mgrid[:size, :size]
    point = np.array([401.3, 388.6])
    sigma = 6 / scale
    blob = np.exp(-((x - point[0]) ** 2 + (y - point[1]) ** 2) / (2 * sigma**2)) * 255
    image = np.repeat(blob.round().astype(np.uint8)[..., None], 3, axis=2)
    m = similarity(scale, 33.0, 0, 0)
    m[:, 2] = 50 - m[:, :2] @ [400, 400]
    out = warp_affine(image, m, 100)[..., 0].astype(np.float64)
    yy, xx = np.mgrid[:100, :100]
    centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, transform_points(point[None], m)[0], atol=0.1)


def test_align_recovers_a_known_similarity():
    """Synthetic face: the canonical crop, put into a bigger image by a known similarity."""
    size, canvas = 120, 400
    crop = smooth_image(size)
    to_crop = similarity(0.45, -27.0, 0, 0)  # image -> crop
    to_crop[:, 2] = size / 2 - to_crop[:, :2] @ [210, 190]
    image = warp_affine(crop, invert_affine(to_crop), canvas)  # the crop, bigger and rotated
    template = TEMPLATES["utkface"]
    landmarks = transform_points(template * size - 0.5, invert_affine(to_crop))
    np.testing.assert_allclose(alignment_matrix(landmarks, template, size), to_crop, atol=1e-9)
    aligned = align_face(image, landmarks, "utkface", size)
    diff = np.abs(aligned.astype(int) - crop.astype(int))[3:-3, 3:-3]  # the rim saw outside the crop
    assert diff.mean() < 1.5 and diff.max() <= 6  # two bicubic interpolations of a smooth image
    assert transform_points(landmarks, alignment_matrix(landmarks, "utkface", 64)) == pytest.approx(
        TEMPLATES["utkface"] * 64 - 0.5, abs=1e-9)


# --- errors ---------------------------------------------------------------------------------------


def test_shape_errors_name_the_shapes():
    image = np.zeros((50, 50, 3), np.uint8)
    landmarks = TEMPLATES["utkface"] * 50
    with pytest.raises(ValueError, match=r"landmarks must have shape \(5, 2\), got shape \(4, 2\)"):
        align_face(image, landmarks[:4])
    with pytest.raises(ValueError, match=r"got shape \(50, 50, 4\)"):
        align_face(np.zeros((50, 50, 4), np.uint8), landmarks)
    with pytest.raises(ValueError, match=r"template must have shape \(5, 2\), got shape \(10,\)"):
        align_face(image, landmarks, template=np.zeros(10))
    with pytest.raises(ValueError, match=r"same shape, got \(3, 2\) and \(4, 2\)"):
        estimate_similarity(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="unknown template 'ffhq'; known: mebeauty, utkface"):
        align_face(image, landmarks, template="ffhq")
    with pytest.raises(ValueError, match=r"matrix must have shape \(2, 3\), got shape \(3, 3\)"):
        transform_points(landmarks, np.eye(3))
    with pytest.raises(ValueError, match="output_size"):
        align_face(image, landmarks, output_size=0)
    with pytest.raises(ValueError, match="singular"):
        warp_affine(image, np.zeros((2, 3)), 10)
    with pytest.raises(ValueError, match=r"landmarks must have shape \(5, 2\), got shape \(10,\)"):
        Face((0, 0, 1, 1), np.zeros(10), 0.5)


def test_templates_are_read_only_and_normalised():
    for name, template in TEMPLATES.items():
        assert template.shape == (5, 2) and not template.flags.writeable, name
        assert np.all((template > 0.2) & (template < 0.8)), name
        assert template[0, 0] < template[2, 0] < template[1, 0], name  # eyes either side of the nose
        assert template[:2, 1].max() < template[2, 1] < template[3:, 1].min(), name


def test_missing_detector_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yuface", None)  # makes `import yuface` fail
    with pytest.raises(ImportError, match="pip install yuface") as info:
        get_detector("yuface")
    assert isinstance(info.value, DldlError)  # the CLI prints it as one line
    with pytest.raises(ValueError, match="unknown face detector 'dlib'; known: yuface, yunet"):
        get_detector("dlib")
    assert isinstance(get_detector(), OnnxYuNetDetector)  # the default needs no optional package


# --- the measured template ------------------------------------------------------------------------


@needs_shared
def test_utkface_template_matches_utkface_chips(detector):
    """Landmarks detected on 16 UTKFace chips (with context) average close to the shipped template."""
    names = (UTKFACE / "splits" / "coral_test.txt").read_text().split()[500:516]  # not the measured ones
    points = []
    for name in names:
        chip = np.asarray(Image.open(UTKFACE / "images" / name).convert("RGB"))
        faces = detector.detect(np.pad(chip, ((32, 32), (32, 32), (0, 0)), mode="reflect"))
        points.append((max(faces, key=lambda f: f.score).landmarks - 32 + 0.5) / 200)
    error = np.abs(np.median(points, axis=0) - TEMPLATES["utkface"])
    # per-face spread (IQR) is 4-11 px at 200 px, the most for the nose's x (head turns)
    assert error.mean() < 0.015 and error.max() < 0.045, error
