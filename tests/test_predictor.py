"""Predictor: photo -> detected, aligned faces -> estimates."""

import numpy as np
import pytest

from dldl.faces import Face
from dldl.predict import Estimator, Predictor


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
    assert set(d) == {"box", "landmarks", "score", "age", "interval_90"} and d["score"] == 0.99
    assert Predictor(est, NoFace()).predict(photo) == []


def test_template_travels_with_the_model(tiny_run):
    est = Estimator.from_checkpoint(tiny_run / "run" / "best.pt")
    assert Predictor(est).template == est.spec.template == "utkface"
    beauty = Estimator(est.model, est.spec.replace(task="beauty", template="mebeauty"))
    assert Predictor(beauty).template == "mebeauty"
    assert Predictor(beauty, template="utkface").template == "utkface"


def test_real_photo_has_faces():
    pytest.importorskip("yuface", reason="the face detector (yuface, a CPython 3.11 wheel) is not installed")
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
