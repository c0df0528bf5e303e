"""The cohesive AP|SE interface (PHYSICS.md section 1), in two formulations sharing one law.

- :mod:`.law`: the bilinear traction-separation law with damage and contact (:class:`CohesiveLaw`).
- :mod:`.nodepair`: the assembled reference: AP|SE nodes duplicated, interface elements on the
  voxel faces or tet triangles, Newton with line search, AMG (:class:`CohesiveProblem`), with
  :mod:`.geometry` (the split mesh and its integration points), :mod:`.averaging` (the opening
  averaged along the interface) and :mod:`.amg` (its preconditioner).
- :mod:`.band`: the interface inside the matrix-free voxel operator: the electrolyte skin of the
  particles as cohesive band voxels, no duplicated nodes, IMPL-EX stepping; :mod:`.voxel` runs it
  (:class:`VoxelCohesiveProblem`).
"""

from solvers.physics.cohesive.averaging import opening_averaging
from solvers.physics.cohesive.geometry import CohesiveInterface, debonded_patches, split_interface
from solvers.physics.cohesive.law import PENALTY_FACTOR, CohesiveLaw, default_penalty
from solvers.physics.cohesive.nodepair import CohesiveProblem

__all__ = ["PENALTY_FACTOR", "CohesiveInterface", "CohesiveLaw", "CohesiveProblem", "debonded_patches",
           "default_penalty", "opening_averaging", "split_interface"]
