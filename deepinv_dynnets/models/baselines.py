r"""The DnCNN baseline: saving and loading deepinv ``DnCNN`` weights trained by our script.

The baseline is ``deepinv.models.DnCNN(pretrained=None)`` trained by
:func:`~deepinv_dynnets.models.train_denoiser` on the same data with about the same compute
as the shipped :class:`~deepinv_dynnets.EulerDenoiser`, so that comparisons are about the
architecture. Its weights ship as ``dncnn_baseline_gray.pt`` (name ``"dncnn-gray"``).
"""

from __future__ import annotations

from pathlib import Path

import deepinv as dinv
import torch

__all__ = ["BASELINES", "save_dncnn", "load_dncnn"]

_FORMAT = "deepinv.models.DnCNN"
_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
#: Shipped baseline weights: name -> file in ``deepinv_dynnets/weights``.
BASELINES = {"dncnn-gray": "dncnn_baseline_gray.pt"}


def save_dncnn(model: dinv.models.DnCNN, path: str | Path, config: dict, **metadata) -> None:
    """Save a ``DnCNN`` with its constructor arguments ``config`` and JSON-able metadata.

    :param deepinv.models.DnCNN model: the network.
    :param str | pathlib.Path path: the file to write.
    :param dict config: ``in_channels``, ``out_channels``, ``depth``, ``nf``.
    :param metadata: stored as is (training command, wall time, PSNR, ...).

    :Examples:

        >>> import tempfile, deepinv as dinv
        >>> from deepinv_dynnets.models import load_dncnn, save_dncnn
        >>> config = dict(in_channels=1, out_channels=1, depth=3, nf=8)
        >>> path = tempfile.mkdtemp() + "/dncnn.pt"
        >>> save_dncnn(dinv.models.DnCNN(**config, pretrained=None), path, config)
        >>> type(load_dncnn(path)).__name__
        'DnCNN'
    """
    torch.save(
        {
            "model": _FORMAT,
            "config": dict(config),
            "state_dict": model.state_dict(),
            "metadata": metadata,
        },
        path,
    )


def load_dncnn(pretrained: str | Path, device: torch.device | str | None = None):
    """Load a ``DnCNN`` written by :func:`save_dncnn` (a path) or shipped (a name).

    :param str | pathlib.Path pretrained: a name in :data:`BASELINES` or a path.
    :param device: where to put the model.
    :return: the ``deepinv.models.DnCNN`` in eval mode, with ``.metadata``.
    :raises ValueError: unknown name, missing, corrupt or foreign file.

    :Examples:

        >>> from deepinv_dynnets.models import load_dncnn
        >>> model = load_dncnn("dncnn-gray")  # the shipped baseline
        >>> model.metadata["command"].split()[:2]
        ['dynnets', 'train-denoiser']
    """
    path = _WEIGHTS / BASELINES[pretrained] if pretrained in BASELINES else Path(pretrained)
    if not path.is_file():
        known = ", ".join(repr(n) for n in BASELINES)
        raise ValueError(f"no baseline weights {str(pretrained)!r}: not a file nor one of {known}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"cannot read {str(path)!r}: not a PyTorch checkpoint ({err})") from err
    if not isinstance(saved, dict) or saved.get("model") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a DnCNN baseline file written by save_dncnn")
    model = dinv.models.DnCNN(**saved["config"], pretrained=None)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} does not match its DnCNN config: {err}") from err
    model.metadata = saved.get("metadata", {})
    return model.to(device).eval() if device is not None else model.eval()
