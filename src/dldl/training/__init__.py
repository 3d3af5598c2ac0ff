"""Training, one job a module, read in this order:

* :mod:`dldl.training.config` -- :class:`TrainConfig`, :data:`PROFILES`, and every rule on its values (:func:`need`);
* :mod:`dldl.training.mixing` -- the sources of a run, their sampling weights and each sample's target;
* :mod:`dldl.training.runs` -- the run folder, checkpoints and resume;
* :mod:`dldl.training.train` -- the loop itself, :func:`train`.

``train(TrainConfig(...))`` runs one job; ``TrainConfig.from_sources(profile, yaml, overrides)`` is
how the CLI merges its sources.
"""

from dldl.training.config import PROFILES, SOURCE_KEYS, TEACHER_TARGET, TrainConfig, check_config, need
from dldl.training.mixing import (
    Source,
    TrainingData,
    build_targets,
    epoch_order,
    holdout,
    load_sources,
    load_training_data,
    seed_for,
    teacher_distribution,
)
from dldl.training.runs import RunState, check_resumable, checkpoint_payload, restore, resume_payload, run_folder, run_lock
from dldl.training.train import Process, build_model, model_spec, setup_process, train

__all__ = ["PROFILES", "SOURCE_KEYS", "TEACHER_TARGET", "TrainConfig", "check_config", "need",
           "Source", "TrainingData", "build_targets", "epoch_order", "holdout", "load_sources", "load_training_data",
           "seed_for", "teacher_distribution",
           "RunState", "check_resumable", "checkpoint_payload", "restore", "resume_payload", "run_folder", "run_lock",
           "Process", "build_model", "model_spec", "setup_process", "train"]
