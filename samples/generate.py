"""Write a seeded synthetic 3-phase composite as a label TIFF (0 void, 1 electrolyte, 2 active)."""

import argparse
import logging

from pipeline.io import write_volume
from segmentation import make_composite


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("output")
    p.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48])
    p.add_argument("--active", type=float, default=0.5)
    p.add_argument("--void", type=float, default=0.1)
    p.add_argument("--radius", type=float, default=6.0, help="particle radius, voxels")
    p.add_argument("--voxel-size-um", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    phases, _ = make_composite(a.shape, active_fraction=a.active, void_fraction=a.void,
                               radius=a.radius, seed=a.seed)
    write_volume(a.output, phases, [a.voxel_size_um] * 3)
    logging.getLogger(__name__).info("wrote %s", a.output)


if __name__ == "__main__":
    main()
