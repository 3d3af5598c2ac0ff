"""The folders of files shipped inside the package (one definition each)."""

from pathlib import Path

ASSETS_DIR = Path(__file__).parent / "assets"
MODELS_DIR = ASSETS_DIR / "models"  # shipped models: <name>.pt + <name>.json (model card)
DETECTORS_DIR = ASSETS_DIR / "detectors"  # face detector networks: <name>.onnx + <name>.json (model card)
SAMPLES_DIR = ASSETS_DIR / "samples"  # aligned face crops (dldl predict --crops)
PHOTOS_DIR = ASSETS_DIR / "photos"  # in-the-wild photos (dldl predict)
WEB_DIR = ASSETS_DIR / "web"  # the page of dldl serve
