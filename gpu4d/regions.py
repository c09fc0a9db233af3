"""Regions of a scan from its reduced coordinates: KMeans atoms merged by separation.

Why not KMeans alone: KMeans prefers clusters of similar size and spread. A grain whose patterns
change smoothly across it (thickness, bending) looks like two clusters to it, and a small compact
region (a twin lamella, an inclusion) costs little to merge into a neighbour; on scans from other
generators that made wrong maps at the true k (``shared/QUALITY-NOTES.md``). So the scan is first
cut into many small KMeans clusters, *atoms*, each inside one region, and the atoms are then merged
two at a time, always the least separated pair first. Two clusters are separated when the
distance between their means is large against the spread of their members (the Mahalanobis
distance under their pooled covariance): the two halves of a smooth gradient are not (about 2.5
to 3.5), two regions are.
The merges form a tree; cutting it gives the clustering for every k at once, nested, so a region
keeps its label across k.

Everything after the atoms works on per-atom sufficient statistics (count, mean, scatter matrix),
so the merge costs nothing that grows with the scan. Atoms smaller than ``min_size`` patterns
(outlier patterns, a few noisy ones) are merged into their least separated neighbour first: they
can never stand as a region of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import to_host
from .scores import mahalanobis
from .kmeans.core import kmeans
from .kmeans.core import nearest

#: Atoms per cluster of the largest k asked for (and at least ``MIN_ATOMS``): enough that every
#: region, the smallest included, gets atoms of its own and a gradient several atoms in a chain.
ATOMS_PER_CLUSTER = 4
#: As many atoms as the default sweep (k = 2..12) fits, whatever k is asked: ``cluster -k K``
#: then cuts the very tree that ``sweep`` cuts, so both give the same map at K. With 24 atoms
#: for a single small k, two grains 4 degrees apart (abTEM, ``benchmarks/bench_abtem.py``) were
#: merged at the true k (ARI 0.67) where the sweep's 48 atoms kept them apart (1.00).
MIN_ATOMS = 48
#: The atoms are fitted on at most this many patterns; every pattern then joins its nearest atom.
ATOM_SAMPLE = 50_000
#: A cluster smaller than this share of the patterns (and at least ``MIN_SIZE_FLOOR`` patterns)
#: cannot be a region: it is merged first (a few outlier patterns would otherwise take a
#: cluster of their own, being far from everything).
MIN_REGION_SHARE = 0.005
MIN_SIZE_FLOOR = 8
#: Scans with fewer patterns are clustered with full-dimensional KMeans instead (the sweep's and
#: cluster's ``exact`` mode): too few patterns to estimate the spreads the merging relies on.
MIN_PATTERNS = 400
#: Pseudo-patterns of the typical within-atom spread added to every pair's spread: keeps the
#: separation of small atoms (whose own spread is a poor estimate) from running to infinity.
PRIOR_PATTERNS = 10.0
#: Edge-preserving smoothing over the scan before the atoms (``smooth_over_scan``): a
#: neighbour's weight is ``exp(-d^2 / (EDGE_SCALE * median d^2))``, d its distance to the
#: pattern in the reduced space, the median over all neighbouring pairs of the scan.
EDGE_SCALE = 1.0
#: Refits on random halves of the patterns behind the stability score.
STABILITY_REPEATS = 2


@dataclass
class RegionTree:
    """Atoms and the order they merge in; ``labels(k)`` cuts the tree into k clusters.

    Attributes
    ----------
    atom_of : (n,) int32 host array, the atom of every pattern.
    merges : list of (a, b, separation) in merge order; the merged cluster takes the next id
        (atoms are 0 .. n_atoms - 1, the i-th merge makes cluster n_atoms + i).
    sizes : (n_atoms + len(merges),) int64, the patterns of every cluster id.
    atom_means : (n_atoms, c) the atoms' means in the reduced space (for ``predict`` and
        ``confidence``).
    """

    atom_of: np.ndarray
    merges: list
    sizes: np.ndarray
    atom_means: np.ndarray  # (n_atoms, c) float64
    atom_iterations: int = 0
    min_size: float = 0.0  # atoms smaller than this were merged first (see ``merge_atoms``)

    @property
    def n_atoms(self) -> int:
        return len(self.merges) + 1 if self.merges else int(self.sizes.shape[0])

    def labels(self, k: int) -> np.ndarray:
        """(n,) int32 labels of the k-cluster cut; label ids are stable across k (a split
        keeps the larger part's id, the smaller part takes id k - 1)."""
        return self.cluster_labels(k)[self.atom_of]

    def cluster_labels(self, k: int) -> np.ndarray:
        """(n_atoms,) the label of every atom in the k-cluster cut."""
        n_atoms = self.n_atoms
        k = max(1, min(int(k), n_atoms))
        # walk down from the root: undo merges in reverse order
        label_of_cluster = {n_atoms + len(self.merges) - 1 if self.merges else 0: 0}
        for step in range(len(self.merges) - 1, n_atoms - k - 1, -1):
            a, b, _ = self.merges[step]
            parent = n_atoms + step
            label = label_of_cluster.pop(parent)
            big, small = (a, b) if self.sizes[a] >= self.sizes[b] else (b, a)
            label_of_cluster[big] = label
            label_of_cluster[small] = len(label_of_cluster)
        atom_labels = np.empty(n_atoms, np.int32)
        for cluster, label in label_of_cluster.items():
            atom_labels[self._atoms_under(cluster)] = label
        return atom_labels

    def predict(self, xp, z, k: int) -> np.ndarray:
        """(n,) int32 region of the k-cluster cut for the rows of ``z`` (xp array): the region
        of their nearest atom."""
        atoms = to_host(nearest(xp, z, xp.asarray(self.atom_means, dtype=np.float32)))
        return self.cluster_labels(k)[atoms]

    def confidence(self, z, ks, chunk: int = 65536) -> dict:
        """{k: (n,) float32 in [0, 1]} for every k of ``ks``: how clearly each pattern belongs
        to its region of the k-cluster cut: ``1 - d_own / d_other``, with d_own the distance
        (reduced space) to the nearest atom of its own region and d_other to the nearest atom
        of any other region. The distances to the atoms are computed once for every k.

        0 where a pattern is as close to another region as to its own (a boundary, a pattern
        that mixes two crystals); near 1 deep inside a region far from the others.
        """
        n = self.atom_of.shape[0]
        out = {k: np.ones(n, np.float32) for k in ks}
        regions = {k: self._usable_regions(k) for k in ks if k > 1}
        if not regions:
            return out
        means = self.atom_means.astype(np.float64)
        norms = np.einsum("ij,ij->i", means, means)
        for start in range(0, n, chunk):
            rows = np.asarray(to_host(z[start : start + chunk]), np.float64)
            d2 = norms[None, :] - 2.0 * rows @ means.T + np.einsum("ij,ij->i", rows, rows)[:, None]
            atoms = self.atom_of[start : start + chunk]
            for k, (region_of_atom, counted) in regions.items():
                same = counted[None, :] == region_of_atom[atoms][:, None]
                other = (counted[None, :] >= 0) & ~same
                d_own = np.sqrt(np.maximum(np.where(same, d2, np.inf).min(axis=1), 0.0))
                d_other = np.sqrt(np.maximum(np.where(other, d2, np.inf).min(axis=1), 0.0))
                out[k][start : start + chunk] = np.clip(1.0 - d_own / np.maximum(d_other, 1e-300), 0.0, 1.0)
        return out

    def _usable_regions(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_atoms,) region of each atom in the k-cluster cut, and the same with -1 for the
        atoms too small to say where a region is: a few outlier patterns make an atom of their
        own, at distance ~0 from themselves, so only atoms of a region's size count (all of a
        region's, if none does)."""
        region_of_atom = self.cluster_labels(k)
        usable = self.sizes[: self.n_atoms] >= self.min_size
        for region in range(k):
            own = region_of_atom == region
            if not (usable & own).any():
                usable |= own
        return region_of_atom, np.where(usable, region_of_atom, -1)

    def _atoms_under(self, cluster: int) -> list[int]:
        n_atoms = self.n_atoms
        stack, atoms = [cluster], []
        while stack:
            c = stack.pop()
            if c < n_atoms:
                atoms.append(c)
            else:
                a, b, _ = self.merges[c - n_atoms]
                stack.extend((a, b))
        return atoms


def fit_region_tree(
    xp,
    z,
    max_k: int,
    *,
    rng: np.random.Generator,
    n_atoms: int | None = None,
    min_region_share: float = MIN_REGION_SHARE,
    max_iter: int = 300,
    tol: float = 1e-4,
    assign_and_sum=None,
) -> RegionTree:
    """Over-segment ``z`` (n, c) into atoms with KMeans, then merge the atoms by separation.

    Parameters
    ----------
    xp : numpy or cupy; ``z`` is an (n, c) float32 array of it.
    max_k : the largest number of clusters that will be cut from the tree.
    rng : host random generator (atom seeding and sample).
    n_atoms : atoms to start from; default ``max(ATOMS_PER_CLUSTER * max_k, MIN_ATOMS)``,
        at most n.
    min_region_share : clusters smaller than this share of the patterns are merged first.
    max_iter, tol, assign_and_sum : for the atoms' KMeans (see ``gpu4d.kmeans.core.kmeans``).
    """
    n = int(z.shape[0])
    m = min(n, n_atoms or max(ATOMS_PER_CLUSTER * max_k, MIN_ATOMS))
    sample = z
    if n > ATOM_SAMPLE:
        rows = np.sort(rng.choice(n, size=ATOM_SAMPLE, replace=False))
        sample = z[xp.asarray(rows)]
    fit = kmeans(
        xp, sample, m, n_init=1, max_iter=max_iter, tol=tol, rng=rng, assign_and_sum=assign_and_sum
    )
    if sample is z:
        atom_of = fit.labels
    else:
        atom_of = nearest(xp, z, fit.centers)
    atom_of = to_host(atom_of).astype(np.int32)
    counts, means, scatter = _atom_statistics(to_host(z), atom_of, m)
    min_size = max(MIN_SIZE_FLOOR, min_region_share * n)
    merges, sizes = merge_atoms(counts, means, scatter, min_size)
    return RegionTree(atom_of, merges, sizes, means, int(fit.n_iter), float(min_size))


def smooth_over_scan(xp, z, scan_shape, edge_scale: float = EDGE_SCALE):
    """``z`` (n, c) averaged with its 8 scan neighbours, weighted by similarity (a bilateral
    filter): float32, same shape.

    Why: a region's patterns share it with their scan neighbours, so averaging them divides the
    noise; a weak region (a twin lamella that adds a quarter of its spots to its host's, a dose
    of 50 counts) then stands out. Neighbours across a boundary between distinct regions are far
    apart in the reduced space and get almost no weight, so boundaries stay sharp; a smooth
    change inside a region (thickness) is not noise and is left as it is.
    """
    ny, nx = scan_shape
    if ny * nx != z.shape[0] or min(ny, nx) < 2:
        return z
    grid = z.reshape(ny, nx, -1).astype(np.float64)
    pairs = []  # (the patterns p, their neighbours p + (dy, dx), squared distances)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each neighbour pair once
        here = (slice(0, ny - dy), slice(max(0, -dx), nx - max(0, dx)))
        there = (slice(dy, ny), slice(max(0, dx), nx - max(0, -dx)))
        pairs.append((here, there, ((grid[here] - grid[there]) ** 2).sum(axis=-1)))
    scale = edge_scale * float(xp.median(xp.concatenate([d2.ravel() for *_, d2 in pairs])))
    if not scale > 0:
        return z
    total = grid.copy()
    weights = xp.ones((ny, nx))
    for here, there, d2 in pairs:
        w = xp.exp(-d2 / scale)
        # each of the pair adds the other to its sum
        total[here] += w[..., None] * grid[there]
        weights[here] += w
        total[there] += w[..., None] * grid[here]
        weights[there] += w
    return (total / weights[..., None]).reshape(ny * nx, -1).astype(np.float32)


def _atom_statistics(z: np.ndarray, atom_of: np.ndarray, m: int):
    """Per atom: count (m,), mean (m, c) and scatter matrix (m, c, c), float64."""
    z = np.asarray(z, np.float64)
    c = z.shape[1]
    counts = np.bincount(atom_of, minlength=m).astype(np.float64)
    order = np.argsort(atom_of, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts).astype(np.int64)])
    means = np.zeros((m, c))
    scatter = np.zeros((m, c, c))
    for a in range(m):
        rows = z[order[bounds[a] : bounds[a + 1]]]
        if rows.shape[0]:
            means[a] = rows.mean(axis=0)
            centred = rows - means[a]
            scatter[a] = centred.T @ centred
    return counts, means, scatter


def merge_atoms(counts, means, scatter, min_size: float):
    """Merge clusters two at a time until one is left: ``(merges, sizes)`` as in RegionTree.

    Empty atoms are merged first (separation 0), then, while any cluster is smaller than
    ``min_size``, the smallest one into its least separated neighbour; otherwise the least
    separated pair of all. The separations of a pair are computed once, when its younger
    cluster is made: a merge changes only the pairs of the cluster it makes.
    """
    counts = np.asarray(counts, np.float64)
    m = counts.shape[0]
    within = scatter.sum(axis=0) / max(counts.sum() - m, 1.0)  # the typical within-atom spread
    ids = list(range(m))
    n_of = {a: counts[a] for a in ids}
    mean_of = {a: means[a] for a in ids}
    scatter_of = {a: scatter[a] for a in ids}
    separation = {}  # (older id, younger id) -> separation
    for i, a in enumerate(ids[:-1]):
        for b, value in zip(ids[i + 1 :], _separations(a, ids[i + 1 :], n_of, mean_of, scatter_of, within)):
            separation[a, b] = float(value)
    sizes = list(counts)
    merges = []
    next_id = m
    while len(ids) > 1:
        empty = [a for a in ids if n_of[a] == 0]
        small = [a for a in ids if n_of[a] < min_size]
        if empty:
            a = empty[0]
            b = next(c for c in ids if c != a)
            sep = 0.0
        elif small:
            a = min(small, key=lambda c: n_of[c])
            sep, b = min((separation[min(a, c), max(a, c)], c) for c in ids if c != a)
        else:
            sep, a, b = min((separation[a, b], a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
        na, nb = n_of.pop(a), n_of.pop(b)
        ma, mb = mean_of.pop(a), mean_of.pop(b)
        sa, sb = scatter_of.pop(a), scatter_of.pop(b)
        total = na + nb
        if total > 0:
            delta = mb - ma
            mean_of[next_id] = (na * ma + nb * mb) / total
            scatter_of[next_id] = sa + sb + (na * nb / total) * np.outer(delta, delta)
        else:
            mean_of[next_id], scatter_of[next_id] = ma, sa
        n_of[next_id] = total
        ids = [c for c in ids if c not in (a, b)]
        if ids:
            for c, value in zip(ids, _separations(next_id, ids, n_of, mean_of, scatter_of, within)):
                separation[c, next_id] = float(value)
        ids.append(next_id)
        merges.append((a, b, sep))
        sizes.append(total)
        next_id += 1
    return merges, np.asarray(sizes, np.int64)


def _separations(a, others, n_of, mean_of, scatter_of, within) -> np.ndarray:
    """Separation of cluster ``a`` from each of ``others``: the Mahalanobis distance between
    their means under the pooled covariance of both clusters' members, ``PRIOR_PATTERNS`` of
    the typical within-atom spread added (``gpu4d.scores.mahalanobis``). A region's own
    variation (a thickness gradient) lies mostly across the line to another region's mean, so
    the distance along that line alone would undercount how distinct they are."""
    deltas = np.stack([mean_of[b] for b in others]) - mean_of[a]
    dof = np.array([n_of[a] + n_of[b] - 2 + PRIOR_PATTERNS for b in others])
    pooled = np.stack([scatter_of[a] + scatter_of[b] + PRIOR_PATTERNS * within for b in others]) / dof[:, None, None]
    return mahalanobis(deltas, pooled)


def stability(xp, z, tree: RegionTree, ks, *, rng: np.random.Generator, repeats: int = STABILITY_REPEATS, **fit_options) -> dict:
    """Per k, how well the clustering survives a refit on half of the patterns: the mean
    adjusted Rand index between ``tree``'s k-cut and that of a tree fitted on a random half
    (every pattern assigned to the refit's nearest atom), over ``repeats`` halves. 1: the same
    regions whatever the sample; a k that splits a region along its noise scores lower."""
    from .scores import adjusted_rand_index

    n = int(z.shape[0])
    totals = {k: 0.0 for k in ks}
    for _ in range(repeats):
        half = np.sort(rng.choice(n, size=max(n // 2, 1), replace=False))
        refit = fit_region_tree(xp, z[xp.asarray(half)], max(ks), rng=rng, **fit_options)
        for k in ks:
            totals[k] += adjusted_rand_index(tree.labels(k), refit.predict(xp, z, k))
    return {k: totals[k] / repeats for k in ks}
