"""Training: one loop (:func:`fit`) for the denoisers and the flows, and one record.

- :func:`train_denoiser` trains an image denoiser on patches (:class:`~deepinv_dynnets.data.ImagePatches`);
- :func:`train_unsupervised` and :func:`train_supervised` train a learned flow,
  :func:`train_hnn` the HNN baseline;
- both run :func:`fit` (Adam, cosine schedule, gradient clipping, resumable checkpoints,
  progress bar) and return a :class:`TrainingRecord`, the model card of the weights;
- under ``torchrun`` they train on all the processes (:mod:`.distributed`:
  :func:`distributed_run`, DistributedDataParallel, a global batch shared among them).
"""

from .denoiser import DEFAULT_VAL_SIGMAS, evaluate_psnr, train_denoiser
from .distributed import distributed_run, is_main_process, launched_by_torchrun
from .flow import refine_lbfgs, train_hnn, train_supervised, train_unsupervised
from .flow_losses import (
    hamiltonian_matching_loss,
    hnn_loss,
    residual_loss,
    supervised_loss,
    trajectory_data,
)
from .loop import check_loop_arguments, fit, load_checkpoint, save_checkpoint
from .record import TrainingRecord, cpu_name, hardware, relative_path, world_size

__all__ = [
    "fit",
    "check_loop_arguments",
    "save_checkpoint",
    "load_checkpoint",
    "TrainingRecord",
    "cpu_name",
    "hardware",
    "world_size",
    "distributed_run",
    "launched_by_torchrun",
    "is_main_process",
    "relative_path",
    "train_denoiser",
    "evaluate_psnr",
    "DEFAULT_VAL_SIGMAS",
    "train_unsupervised",
    "train_supervised",
    "train_hnn",
    "hnn_loss",
    "trajectory_data",
    "refine_lbfgs",
    "residual_loss",
    "hamiltonian_matching_loss",
    "supervised_loss",
]
