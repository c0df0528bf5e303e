"""Materials and physics problems (elasticity with swelling eigenstrain, cohesive interface)."""

from solvers.physics.cohesive import CohesiveLaw, CohesiveProblem, default_penalty
from solvers.physics.elasticity import ElasticProblem, box_constraints
from solvers.physics.materials import PRESETS, Material, get_material

__all__ = ["PRESETS", "CohesiveLaw", "CohesiveProblem", "ElasticProblem", "Material", "box_constraints",
           "default_penalty", "get_material"]
