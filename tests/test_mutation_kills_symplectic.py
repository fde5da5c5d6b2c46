"""The canonical symplectic structure against matrices written out here.

Written for the mutation testing of ``flows/symplectic.py`` (see the guarantees page):
:math:`J` and its action entry by entry, in every dtype and batch shape, and every refusal
of :func:`check_phase_space` with its whole message.
"""

import re

import pytest
import torch

from deepinv_dynnets.flows.symplectic import apply_J, canonical_J, check_phase_space


def _J_by_hand(n, dtype=torch.float64):
    J = torch.zeros(2 * n, 2 * n, dtype=dtype)
    for i in range(n):
        J[i, n + i] = 1
        J[n + i, i] = -1
    return J


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_J_and_its_action_entry_by_entry(n, dtype):
    J = canonical_J(n, dtype=dtype, device="cpu")
    assert J.dtype == dtype and J.shape == (2 * n, 2 * n)
    assert torch.equal(J, _J_by_hand(n, dtype))
    assert canonical_J(n).dtype == torch.get_default_dtype()
    for shape in [(2 * n,), (3, 2 * n), (2, 5, 2 * n)]:
        v = torch.randn(shape).to(dtype)
        Jv = apply_J(v)
        assert Jv.dtype == dtype and Jv.shape == v.shape
        assert torch.equal(Jv[..., :n], v[..., n:]) and torch.equal(Jv[..., n:], -v[..., :n])
        assert torch.equal(apply_J(Jv), -v)  # J^2 = -I


def test_apply_J_messages():
    with pytest.raises(
        ValueError,
        match=r"^v must have at least one dimension \(its last holds q then p\), got a 0-d "
        r"tensor$",
    ):
        apply_J(torch.tensor(1.0))
    with pytest.raises(
        ValueError,
        match=r"^v must have an even last dimension 2n \(positions q then momenta p\), got "
        r"shape \(2, 4, 3\)$",
    ):
        apply_J(torch.zeros(2, 4, 3))
    assert apply_J(torch.zeros(0, 2)).shape == (0, 2)


@pytest.mark.parametrize(
    ("y", "kwargs", "message"),
    [
        ([0.0, 1.0], {"name": "y0"}, "y0 must be a torch.Tensor, got list"),
        (
            torch.zeros(2, 4, dtype=torch.int32),
            {},
            "y must be a floating-point tensor, got dtype torch.int32",
        ),
        (
            torch.tensor(0.0),
            {"name": "x"},
            "x must have at least one dimension (its last holds q then p), got a 0-d tensor",
        ),
        (
            torch.zeros(5, 4),
            {"name": "state", "dim": 6},
            "state must have last dimension 6 (positions q then momenta p), got shape (5, 4)",
        ),
        (
            torch.zeros(3, 5),
            {"dim": 5},
            "y must have an even last dimension 2n (positions q then momenta p), got shape (3, 5)",
        ),
        (
            torch.tensor([[0.0, 1.0], [float("-inf"), 0.0]]),
            {"name": "z", "dim": 2},
            "z contains NaN or Inf values",
        ),
    ],
)
def test_check_phase_space_refusals_in_full(y, kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_phase_space(y, **kwargs)


def test_check_phase_space_accepts_what_it_should():
    for y, dim in [
        (torch.zeros(4), 4),
        (torch.zeros(2, 3, 6, dtype=torch.float64), None),
        (torch.zeros(1, 2, dtype=torch.float16), 2),
    ]:
        assert check_phase_space(y, dim=dim) is None


def test_canonical_J_is_made_on_the_device_asked_for():
    # the meta device needs no accelerator: J must be made where it is asked for
    for device in ("meta", torch.device("meta")):
        J = canonical_J(3, dtype=torch.float32, device=device)
        assert J.device.type == "meta" and J.shape == (6, 6) and J.dtype == torch.float32
    assert canonical_J(1, device="cpu").device.type == "cpu"
