"""Lipschitz tools: the algebra of averaged operators."""

from .averagedness import compose_averaged, euler_step_alpha, relax_averaged

__all__ = ["compose_averaged", "relax_averaged", "euler_step_alpha"]
