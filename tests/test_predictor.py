"""Predictor: photo -> detected, aligned faces -> estimates."""

import numpy as np
import pytest

from dldl.faces import Face
from dldl.runtime import Estimator
from dldl.predictor import Predictor


class FixedDetector:
    """Reports one face with given landmarks, whatever the image."""

    def __init__(self, landmarks):
        self.landmarks = np.asarray(landmarks, dtype=float)

    def detect(self, image):
        return [Face((0, 0, image.shape[1], image.shape[0]), self.landmarks, 0.99)]


class NoFace:
    def detect(self, image):
        return []


def test_crops_and_detected_faces(tiny_run):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    photo = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    as_crop = Predictor(est).predict(photo)
    assert len(as_crop) == 1 and as_crop[0].landmarks is None and as_crop[0].box == (0, 0, 160, 120)
    lm = [[60, 50], [100, 50], [80, 70], [65, 90], [95, 90]]
    faces = Predictor(est, FixedDetector(lm)).predict(photo)
    assert len(faces) == 1 and faces[0].crop.shape == (est.cache_size, est.cache_size, 3)
    d = faces[0].to_dict("age")
    assert set(d) == {"box", "landmarks", "score", "age", "interval_90", "flags"} and d["score"] == 0.99
    assert Predictor(est, NoFace()).predict(photo) == []


def test_template_travels_with_the_model(tiny_run):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    assert Predictor(est).template == est.spec.template == "utkface"
    beauty = Estimator(est.model, est.spec.replace(task="beauty", template="mebeauty"))
    assert Predictor(beauty).template == "mebeauty"
    assert Predictor(beauty, template="utkface").template == "utkface"


def test_flip_tta_follows_the_model_unless_the_caller_says(tiny_run):
    """A model whose spec turns flip TTA off is predicted from one view; the caller can turn it back on."""
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    one_view = Estimator(est.model, est.spec.replace(tta_flip=False))
    photo = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    assert Predictor(one_view, tta_flip=True).predict(photo)[0].value == pytest.approx(float(est.predict_arrays(
        Predictor(est).predict(photo)[0].crop[None], tta_flip=True).estimate[0]))
    crop = Predictor(one_view).predict(photo)[0].crop[None]
    single, both = (float(est.predict_arrays(crop, tta_flip=t).estimate[0]) for t in (False, True))
    assert single != pytest.approx(both)  # the two views differ, so the checks below tell them apart
    assert Predictor(one_view).predict(photo)[0].value == pytest.approx(single)
    assert Predictor(est).predict(photo)[0].value == pytest.approx(both)


def test_real_photo_has_faces():
    import dldl
    from dldl.assets import PHOTOS_DIR
    from dldl.data.images import read_image
    from dldl.faces import get_detector

    if "tiny_age_net-utkface" not in dldl.list_pretrained():
        pytest.skip("no shipped model in this checkout")
    pred = Predictor(dldl.load("tiny_age_net-utkface"), get_detector())
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    counts = [len(pred.predict(np.asarray(read_image(p)))) for p in photos]
    assert all(c >= 1 for c in counts) and max(counts) >= 2


# ----------------------------------------------------------------- flags: when not to trust an estimate

def _face(**kw):
    from dldl.results import FacePrediction

    base = dict(box=(0.0, 0.0, 120.0, 140.0), landmarks=np.zeros((5, 2)), score=0.95, value=30.0, interval=(24.0, 37.0),
                distribution=None, crop=np.zeros((8, 8, 3), np.uint8))
    return FacePrediction(**{**base, **kw})


@pytest.mark.parametrize("change, flag", [
    ({}, None),
    ({"score": 0.81}, "low_score"),
    ({"box": (0.0, 0.0, 30.0, 36.0)}, "small_face"),
    ({"interval": (10.0, 80.0)}, "flat_distribution"),
    ({"value": 70.0}, "outside_training_range"),
    ({"distribution": np.exp(-0.5 * ((np.arange(101.0) - 20) / 4) ** 2) + np.exp(-0.5 * ((np.arange(101.0) - 70) / 4) ** 2)},
     "two_peaks"),
])
def test_face_flags(change, flag):
    from dldl.results import face_flags
    from dldl.labels import LabelSet
    from dldl.models.spec import ModelSpec

    spec = ModelSpec("tiny_age_net", LabelSet(0, 100, 1), label_range=(21.0, 60.0))
    assert face_flags(_face(**change), spec) == (() if flag is None else (flag,))


def test_given_crops_are_never_flagged_small():
    from dldl.results import face_flags
    from dldl.labels import LabelSet
    from dldl.models.spec import ModelSpec

    assert face_flags(_face(box=(0.0, 0.0, 24.0, 24.0), landmarks=None, score=None), ModelSpec("tiny_age_net", LabelSet(0, 100, 1))) == ()


# ----------------------------------------------------------------- dldl.predict, the one call

def test_one_call_predict_takes_paths_images_and_arrays():
    """A path, a PIL image, an RGB array and a BGR array of one photo give the same faces, as
    the dicts of ``dldl predict --json``; a list gives a list."""
    from PIL import Image

    import dldl
    from dldl.assets import PHOTOS_DIR

    if "mobilenet_v2-age" not in dldl.list_pretrained():
        pytest.skip("the shipped age model is not in this checkout")
    path = sorted(PHOTOS_DIR.glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    by_path = dldl.predict(path)
    assert set(by_path) == {"path", "task", "model", "model_version", "scale", "faces", "error", "model_sha256"}
    assert by_path["scale"] == [0.0, 116.0] and "percentile" not in by_path["faces"][0]  # ages get no percentile
    assert by_path["model"] == "mobilenet_v2-age" and len(by_path["model_version"]) == 12 and by_path["faces"]
    face = by_path["faces"][0]
    assert {"face", "box", "landmarks", "score", "age", "interval_90", "flags"} <= set(face) and "distribution" not in face
    assert [f["face"] for f in by_path["faces"]] == list(range(1, len(by_path["faces"]) + 1))
    others = dldl.predict([Image.open(path), rgb, np.ascontiguousarray(rgb[:, :, ::-1])], distribution=True)
    others[2] = dldl.predict(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True, distribution=True)
    for other in others:
        assert [f["age"] for f in other["faces"]] == pytest.approx([f["age"] for f in by_path["faces"]], abs=0.05)
        assert len(other["faces"][0]["distribution"]["probs"]) == 117
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\) uint8, got float64 \(4, 4\)"):
        dldl.predict(np.zeros((4, 4)))


def test_beauty_faces_get_a_percentile_among_the_training_faces():
    import dldl
    from dldl.assets import PHOTOS_DIR
    from dldl.results import percentile_of
    from dldl.predictor import TASKS
    from dldl.hub import model_card

    quantiles = model_card(TASKS["beauty"])["reference_estimates"]["quantiles"]
    result = dldl.predict(sorted(PHOTOS_DIR.glob("*.jpg"))[0], task="beauty")
    assert result["scale"] == [1.0, 10.0]
    for face in result["faces"]:
        assert 0 <= face["percentile"] <= 100
        assert face["percentile"] == pytest.approx(percentile_of(face["beauty"], quantiles), abs=0.3)
    with pytest.raises(ValueError, match=r"101 non-decreasing values .* shape \(3,\)"):
        percentile_of(1.0, [1.0, 2.0, 3.0])


class CountingDetector(FixedDetector):
    """FixedDetector that records the photos it saw and how many detections ever overlapped."""

    def __init__(self, landmarks):
        super().__init__(landmarks)
        import threading

        self.seen, self.running, self.most = [], 0, 0
        self._guard = threading.Lock()

    def detect(self, image):
        import time

        with self._guard:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.01)
        self.seen.append(int(image[0, 0, 0]))
        with self._guard:
            self.running -= 1
        return super().detect(image)


def test_stream_reads_ahead_yet_gives_every_photo_in_order_as_one_at_a_time_would(tiny_run, tmp_path):
    """stream() detects the next photo in a second thread while it estimates this one: the results
    are those of one photo at a time, in order, a bad file in the middle gives its error line and
    the rest go on, and leaving the loop early stops it (no photo after the next is read)."""
    from PIL import Image

    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(5):
        photo = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        photo[0, 0] = 10 * i  # names the photo in the detector's record
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(photo).save(paths[-1])
    (tmp_path / "2.png").write_bytes(b"not a png")
    lm = [[60, 50], [100, 50], [80, 70], [65, 90], [95, 90]]
    detector = CountingDetector(lm)
    streamed = list(Predictor(est, detector).stream(paths))
    one_by_one = [Predictor(est, FixedDetector(lm)).safe(p) for p in paths]
    assert [r.path for r in streamed] == [str(p) for p in paths]
    assert streamed[2].error and "2.png" in streamed[2].error and not streamed[2].faces
    for a, b in zip(streamed, one_by_one):
        assert a.error == b.error and [f.value for f in a.faces] == pytest.approx([f.value for f in b.faces])
    assert sorted(detector.seen) == [0, 10, 30, 40] and detector.most == 1  # one detection at a time

    early = CountingDetector(lm)
    results = Predictor(est, early).stream(paths)
    assert next(results).path == str(paths[0])
    results.close()
    assert sorted(early.seen) in ([0], [0, 10])  # the first photo, and at most the one read ahead


def test_predict_takes_the_faces_detect_found(tiny_run):
    """predict(image, faces) skips detection: the same faces as predict(image); no detector: detect() is None."""
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    photo = np.random.default_rng(4).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    lm = [[60, 50], [100, 50], [80, 70], [65, 90], [95, 90]]
    predictor = Predictor(est, FixedDetector(lm))
    faces = predictor.detect(photo)
    assert [f.value for f in predictor.predict(photo, faces)] == pytest.approx([f.value for f in predictor.predict(photo)])
    assert predictor.predict(photo, []) == []
    assert Predictor(est).detect(photo) is None


def test_the_photo_pipeline_runs_its_model_on_one_thread_unless_asked():
    """One ONNX Runtime thread for the model by default (a photo's few faces cost less CPU on one,
    and stream() runs the detector on the other core); threads=None gives one per core."""
    from dldl.predictor import pipeline

    def threads(p):
        return p.estimator.model.session.get_session_options().intra_op_num_threads

    assert threads(pipeline("age", cache=False)) == 1
    assert threads(pipeline("age", cache=False, threads=2)) == 2
