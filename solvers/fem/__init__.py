"""Elements, quadrature and assembly (element type is data)."""

from solvers.fem.elements import HEX8, Element

__all__ = ["HEX8", "Element"]
