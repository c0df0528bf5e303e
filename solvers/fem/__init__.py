"""Elements, quadrature and assembly (element type is data)."""

from solvers.fem.elements import HEX8, TET4, TET10, Element

__all__ = ["HEX8", "TET4", "TET10", "Element"]
