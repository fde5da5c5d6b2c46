"""Symplectic flows and Hamiltonian systems, with a torchdiffeq-shaped interface."""
