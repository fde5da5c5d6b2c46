r"""The DnCNN baseline: saving and loading deepinv ``DnCNN`` weights trained by our script.

The baseline is ``deepinv.models.DnCNN(pretrained=None)`` trained by
:func:`~deepinv_dynnets.training.train_denoiser` on the same data with about the same compute
as the shipped :class:`~deepinv_dynnets.EulerDenoiser`, so that comparisons are about the
architecture. Its weights ship as ``dncnn_baseline_gray.pt`` (name ``"dncnn-gray"``).
"""

from __future__ import annotations

from pathlib import Path

import deepinv as dinv
import torch

from ..pretrained import SHIPPED, load_weights, resolve_weights, save_weights

__all__ = ["BASELINES", "save_dncnn", "load_dncnn"]

#: Shipped baseline weights: name -> file in ``deepinv_dynnets/weights`` (a view of
#: :data:`deepinv_dynnets.pretrained.SHIPPED`).
BASELINES = SHIPPED["dncnn"]


def save_dncnn(model: dinv.models.DnCNN, path: str | Path, config: dict, **metadata) -> None:
    """Save a ``DnCNN``, its constructor arguments ``config`` and JSON-able metadata.

    The weights file is a plain state dict, so deepinv's own
    ``DnCNN(**config, pretrained=path)`` reads it too; ``config`` and ``metadata`` go to
    the model card beside it (see :func:`~deepinv_dynnets.pretrained.save_weights`).

    :param deepinv.models.DnCNN model: the network.
    :param str | pathlib.Path path: the file to write (``.pt``).
    :param dict config: ``in_channels``, ``out_channels``, ``depth``, ``nf``.
    :param metadata: stored in the card (training command, wall time, PSNR, ...).

    :Examples:

        >>> import tempfile, deepinv as dinv
        >>> from deepinv_dynnets.models import load_dncnn, save_dncnn
        >>> config = dict(in_channels=1, out_channels=1, depth=3, nf=8)
        >>> path = tempfile.mkdtemp() + "/dncnn.pt"
        >>> save_dncnn(dinv.models.DnCNN(**config, pretrained=None), path, config)
        >>> type(load_dncnn(path)).__name__
        'DnCNN'
        >>> type(dinv.models.DnCNN(**config, pretrained=path)).__name__  # deepinv reads it too
        'DnCNN'
    """
    save_weights(model, path, kind="dncnn", config=config, **metadata)


def load_dncnn(pretrained: str | Path, device: torch.device | str | None = None):
    """Load a ``DnCNN`` written by :func:`save_dncnn` (a path) or shipped (a name).

    :param str | pathlib.Path pretrained: a name in :data:`BASELINES` or a path.
    :param device: where to put the model.
    :return: the ``deepinv.models.DnCNN`` in eval mode, with ``.metadata`` (its model card).
    :raises ValueError: unknown name, missing, corrupt or foreign file.

    :Examples:

        >>> from deepinv_dynnets.models import load_dncnn
        >>> model = load_dncnn("dncnn-gray")  # the shipped baseline
        >>> model.metadata["command"].split()[:2]
        ['dynnets', 'train-denoiser']
    """
    path = resolve_weights(pretrained, "dncnn")
    state, card = load_weights(path, kind="dncnn")
    if not isinstance(card.get("config"), dict):
        raise ValueError(f"{str(path)!r} has no DnCNN config in its model card")
    try:
        model = dinv.models.DnCNN(**card["config"], pretrained=None)
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{str(path)!r} does not match its DnCNN config: {err}") from err
    model.metadata = card
    return model.to(device).eval() if device is not None else model.eval()
