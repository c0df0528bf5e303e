"""One random three-phase sample meshed three ways through the whole pipeline (issue 5).

voxel-hex, voxel-tet and conforming-tet meshes of the same labels must give the same
per-particle stresses up to discretisation error. Stated tolerance: the volume-mean von
Mises stress of every particle that does not touch the box within 12 % of the voxel-hex
value (measured on this sample: voxel-tet +3.6 to +10.1 %, systematically stiffer than the
hexes; conforming-tet -0.5 to +9.3 %).
"""

import json

import meshio
import numpy as np
import pytest

from pipeline import io
from pipeline.cli import main
from segmentation import make_composite
from tests.helpers import label_run_config

KINDS = ("voxel-hex", "voxel-tet", "conforming-tet")
VM_RTOL = 0.12


def run_kind(tmp_path, kind):
    cfg = tmp_path / f"{kind}.toml"
    cfg.write_text(label_run_config(f"""
[mesh]
kind = "{kind}"
msh = true
[cycling]
soc_start = 1.0
soc_end = 0.4
steps = 1
[output]
dir = "{kind}"
"""))
    assert main(["-q", "run", str(cfg)]) == 0
    return tmp_path / kind


@pytest.fixture(scope="module")
def three_ways(tmp_path_factory):
    pytest.importorskip("pygalmesh")
    tmp = tmp_path_factory.mktemp("kinds")
    phases, _ = make_composite((28, 28, 28), active_fraction=0.45, void_fraction=0.05, radius=4, seed=7)
    io.write_volume(tmp / "stack.tif", phases, (0.5, 0.5, 0.5))
    return {k: run_kind(tmp, k) for k in KINDS}


def test_per_particle_von_mises_agrees_between_mesh_kinds(three_ways):
    tabs = {k: io.read_csv(out / "particles.csv") for k, out in three_ways.items()}
    hexes = tabs["voxel-hex"]
    for k in KINDS[1:]:  # the same particles in the same order: the tables come from the same labels
        assert np.array_equal(tabs[k]["particle_id"], hexes["particle_id"])
        assert np.array_equal(tabs[k]["touches_boundary"], hexes["touches_boundary"])
    inner = ~hexes["touches_boundary"] & hexes["meshed"]
    assert inner.sum() >= 8
    for k in KINDS[1:]:
        rel = tabs[k]["von_mises_mean_MPa"][inner] / hexes["von_mises_mean_MPa"][inner] - 1
        print(f"{k}: per-particle mean von Mises against voxel-hex, {inner.sum()} interior particles: "
              f"{np.round(100 * rel, 1)} %")
        assert np.abs(rel).max() < VM_RTOL


def test_tet_runs_report_quality_and_export_gmsh(three_ways):
    for kind in KINDS[1:]:
        out = three_ways[kind]
        mesh = json.loads((out / "summary.json").read_text())["mesh"]
        assert mesh["kind"] == kind and mesh["element"] == "tetra"
        q = mesh["quality"]
        assert q["cells"] == mesh["cells"] and 0 < q["min_dihedral_deg"] <= q["p1_dihedral_deg"] < 90
        assert all(abs(e) < 0.05 for e in q["phase_volume_rel_error"].values())
        if kind == "voxel-tet":  # the Kuhn split: every tet has dihedral angles of 45, 60 and 90 degrees
            assert q["min_dihedral_deg"] == pytest.approx(45) and q["max_dihedral_deg"] == pytest.approx(90)
        assert "tetrahedra" in (out / "report.html").read_text()
        m = meshio.read(out / "mesh.msh")
        assert m.cells[0].type == "tetra" and m.cells[0].data.shape[0] == mesh["cells"]
        assert set(np.unique(m.cell_data["gmsh:physical"][0])) == {1, 2}  # the phase codes
        with meshio.xdmf.TimeSeriesReader(out / "fields.xdmf") as r:
            _, cells = r.read_points_cells()
            _, _, cd = r.read_data(0)
        assert cells[0].type == "tetra" and cd["voxel"][0].shape == (mesh["cells"],)
