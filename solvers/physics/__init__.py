"""Materials and physics problems (elasticity with swelling eigenstrain)."""

from solvers.physics.elasticity import ElasticProblem, box_constraints
from solvers.physics.materials import PRESETS, Material, get_material

__all__ = ["PRESETS", "ElasticProblem", "Material", "box_constraints", "get_material"]
