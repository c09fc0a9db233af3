"""Crystal phases and their kinematic spot patterns, simulated with diffsims.

Each phase is a real structure built with diffpy.structure (atoms at their Wyckoff positions);
diffsims computes the reflections the Ewald sphere cuts for one orientation and their kinematic
intensities (Lobato scattering factors, a Lorentzian relrod). One simulation per region: the
probe positions of a region share its spot list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Accelerating voltage, kV.
VOLTAGE_KV = 200.0
#: Relrod half-length (1/Angstrom): about 1 / thickness for a 50 nm foil.
MAX_EXCITATION_ERROR = 0.02
#: Reflections weaker than this fraction of a pattern's strongest are dropped.
MIN_SPOT_FRACTION = 5e-3


def _fcc(element, a):
    return [(element, xyz) for xyz in ((0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5))], (a, a, a, 90, 90, 90), 225


def _bcc(element, a):
    return [(element, (0, 0, 0)), (element, (0.5, 0.5, 0.5))], (a, a, a, 90, 90, 90), 229


def _hcp(element, a, c):
    return [(element, (1 / 3, 2 / 3, 0.25)), (element, (2 / 3, 1 / 3, 0.75))], (a, a, c, 90, 90, 120), 194


def _diamond(element, a):
    fcc = ((0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5))
    sites = [*fcc, *[(x + 0.25, y + 0.25, z + 0.25) for x, y, z in fcc]]
    return [(element, xyz) for xyz in sites], (a, a, a, 90, 90, 90), 227


def _rock_salt(cation, anion, a):
    fcc = ((0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5))
    atoms = [(cation, xyz) for xyz in fcc] + [(anion, ((x + 0.5) % 1, y, z)) for x, y, z in fcc]
    return atoms, (a, a, a, 90, 90, 90), 225


def _rutile(a=4.594, c=2.959, u=0.305):
    atoms = [("Ti", (0, 0, 0)), ("Ti", (0.5, 0.5, 0.5))]
    atoms += [("O", xyz) for xyz in ((u, u, 0), (1 - u, 1 - u, 0), (0.5 + u, 0.5 - u, 0.5), (0.5 - u, 0.5 + u, 0.5))]
    return atoms, (a, a, c, 90, 90, 90), 136


def _alpha_uranium(a=2.854, b=5.869, c=4.955, y=0.1025):
    sites = ((0, y, 0.25), (0, 1 - y, 0.75), (0.5, 0.5 + y, 0.25), (0.5, 0.5 - y, 0.75))
    return [("U", xyz) for xyz in sites], (a, b, c, 90, 90, 90), 63


#: name -> (atoms [(element, fractional xyz)], lattice (a, b, c, alpha, beta, gamma) in Angstrom
#: and degrees, space group number, crystal system)
PHASES = {
    "Al": (*_fcc("Al", 4.05), "cubic fcc"),
    "Cu": (*_fcc("Cu", 3.615), "cubic fcc"),
    "Au": (*_fcc("Au", 4.078), "cubic fcc"),
    "Fe": (*_bcc("Fe", 2.8665), "cubic bcc"),
    "Ti": (*_hcp("Ti", 2.951, 4.686), "hexagonal hcp"),
    "Mg": (*_hcp("Mg", 3.209, 5.211), "hexagonal hcp"),
    "Si": (*_diamond("Si", 5.431), "cubic diamond"),
    "MgO": (*_rock_salt("Mg", "O", 4.212), "cubic rock-salt"),
    "TiO2": (*_rutile(), "tetragonal rutile"),
    "U": (*_alpha_uranium(), "orthorhombic alpha-U"),
}

#: Low-index zone axes [uvw] (direct-lattice directions) the grains look down, per lattice.
ZONES = {
    "cubic": ((0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2), (0, 1, 2), (1, 2, 3)),
    "hexagonal": ((0, 0, 1), (1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 1, 1), (2, 1, 0)),
    "tetragonal": ((0, 0, 1), (1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 1, 1), (2, 1, 0)),
    "orthorhombic": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1)),
}

#: Twin or fault axes (direct-lattice directions): a 180-degree turn about one of them gives the
#: twin orientation ({111} twins in the cubic phases; a low-index axis elsewhere).
TWIN_AXES = {
    "cubic": ((1, 1, 1), (1, 1, -1), (1, -1, 1), (-1, 1, 1)),
    "hexagonal": ((1, 0, 2), (0, 1, 2), (1, 1, 2)),
    "tetragonal": ((1, 0, 1), (0, 1, 1)),
    "orthorhombic": ((1, 1, 0), (1, -1, 0), (0, 1, 1)),
}


@dataclass(frozen=True)
class Spots:
    """Bragg spots of one orientation: offsets from the beam (1/Angstrom) and intensities."""

    gy: np.ndarray  # (n,) float64
    gx: np.ndarray  # (n,) float64
    intensity: np.ndarray  # (n,) float64, kinematic, arbitrary units
    g_spacing: np.ndarray  # (n,) float64, |g| in 1/Angstrom

    def merged(self, other: "Spots", share: float) -> "Spots":
        """These spots with ``share`` of the total intensity moved to ``other``'s."""
        a, b = self.intensity.sum(), other.intensity.sum()
        return Spots(
            gy=np.concatenate([self.gy, other.gy]),
            gx=np.concatenate([self.gx, other.gx]),
            intensity=np.concatenate([(1 - share) * self.intensity / a, share * other.intensity / b]),
            g_spacing=np.concatenate([self.g_spacing, other.g_spacing]),
        )


def lattice_family(name: str) -> str:
    return PHASES[name][3].split()[0]


@lru_cache(maxsize=None)
def phase(name: str):
    """The orix Phase (with its diffpy Structure) of a named crystal."""
    from diffpy.structure import Atom, Lattice, Structure
    from orix.crystal_map import Phase

    atoms, cell, space_group, _ = PHASES[name]
    structure = Structure(atoms=[Atom(el, xyz) for el, xyz in atoms], lattice=Lattice(*cell))
    return Phase(name=name, space_group=space_group, structure=structure)


def _rotation_to_z(v: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) that turns the vector ``v`` onto +z (Rodrigues)."""
    v = v / np.linalg.norm(v)
    axis = np.cross(v, [0.0, 0.0, 1.0])
    s, c = np.linalg.norm(axis), v[2]
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    return _rotation_about(axis / s, math.atan2(s, c))


def _rotation_about(axis, angle: float) -> np.ndarray:
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def zone_matrix(name: str, zone, in_plane_rad: float, tilt_rad: float, tilt_axis_rad: float) -> np.ndarray:
    """Orientation matrix (crystal Cartesian -> lab) putting ``zone`` [uvw] along the beam (+z),
    turned in-plane by ``in_plane_rad`` and tilted ``tilt_rad`` off the zone."""
    base = phase(name).structure.lattice.base  # rows: a, b, c in orix's Cartesian frame
    to_zone = _rotation_to_z(np.asarray(zone, dtype=np.float64) @ base)
    spin = _rotation_about([0, 0, 1], in_plane_rad)
    tilt = _rotation_about([math.cos(tilt_axis_rad), math.sin(tilt_axis_rad), 0.0], tilt_rad)
    return tilt @ spin @ to_zone


def misoriented(matrix: np.ndarray, angle_rad: float, rng: np.random.Generator) -> np.ndarray:
    """``matrix`` turned by ``angle_rad`` about a random lab axis: a low-angle neighbour."""
    axis = rng.normal(size=3)
    return _rotation_about(axis, angle_rad) @ matrix


def twinned(name: str, matrix: np.ndarray, axis_index: int) -> np.ndarray:
    """The twin orientation: ``matrix`` after a 180-degree turn about a twin axis of the crystal."""
    axes = TWIN_AXES[lattice_family(name)]
    direction = np.asarray(axes[axis_index % len(axes)], dtype=np.float64) @ phase(name).structure.lattice.base
    return matrix @ _rotation_about(direction, math.pi)


def simulate_spots(name: str, matrices: list[np.ndarray], reciprocal_radius: float, precession_deg: float = 0.0) -> list[Spots]:
    """Kinematic spots of crystal ``name`` in each orientation (one diffsims call for all).

    ``matrices`` map crystal Cartesian to lab coordinates, z along the beam.
    """
    from diffsims.generators.simulation_generator import SimulationGenerator
    from orix.quaternion import Rotation

    generator = SimulationGenerator(VOLTAGE_KV, precession_angle=precession_deg)
    # orix rotations act the other way round (lab -> crystal): checked in the tests by the zone
    # law, every zero-order spot hkl of zone [uvw] has h u + k v + l w = 0.
    rotations = Rotation.from_matrix(np.stack([m.T for m in matrices]))
    sim = generator.calculate_diffraction2d(
        phase(name), rotations, reciprocal_radius=reciprocal_radius,
        with_direct_beam=False, max_excitation_error=MAX_EXCITATION_ERROR,
    )
    vectors = sim.coordinates if len(matrices) > 1 else [sim.coordinates]
    out = []
    for v in vectors:
        xyz, intensity = np.asarray(v.data), np.asarray(v.intensity, dtype=np.float64)
        keep = intensity > MIN_SPOT_FRACTION * intensity.max() if intensity.size else intensity > 0
        out.append(Spots(
            gy=xyz[keep, 1], gx=xyz[keep, 0], intensity=intensity[keep],
            g_spacing=np.hypot(xyz[keep, 0], xyz[keep, 1]),
        ))
    return out


def zone_hkl(name: str, matrix: np.ndarray, reciprocal_radius: float) -> np.ndarray:
    """Miller indices (n, 3) of the simulated spots, for checking the orientation convention."""
    from diffsims.generators.simulation_generator import SimulationGenerator
    from orix.quaternion import Rotation

    sim = SimulationGenerator(VOLTAGE_KV).calculate_diffraction2d(
        phase(name), Rotation.from_matrix(matrix.T), reciprocal_radius=reciprocal_radius,
        with_direct_beam=False, max_excitation_error=MAX_EXCITATION_ERROR,
    )
    intensity = np.asarray(sim.coordinates.intensity)
    return np.asarray(sim.coordinates.hkl)[intensity > MIN_SPOT_FRACTION * intensity.max()]
