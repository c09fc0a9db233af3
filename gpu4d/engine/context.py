"""What a pass needs besides its part: the backend, the preprocessing recipe, device copies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import pixel_math
from ..kernels.blur import gaussian_taps

#: Rows preprocessed at a time on the CPU: a chunk of the kernel's output stays in the cache
#: (L3) while the pass's product reads it (the GPU takes the whole partition at once). Chunks
#: of 4-32 MB timed alike on the seed-sized scan; much smaller ones pay per-call thread wake-ups.
CPU_CHUNK_BYTES = 8 * 2**20
#: ... and at least this many rows.
MIN_CHUNK_ROWS = 8


def cpu_chunk_rows(n_features: int) -> int:
    """Feature rows of ``n_features`` float32 values preprocessed at a time on the CPU (by
    every pass, and by live clustering and classification)."""
    return max(MIN_CHUNK_ROWS, CPU_CHUNK_BYTES // (4 * max(1, int(n_features))))


@dataclass(frozen=True, eq=False)
class RowRecipe:
    """How raw patterns become feature rows (picklable: host arrays and kernel codes).

    ``pixel_y``, ``pixel_x``: the kept pixels (int32, m of them); ``transform`` and ``norm``:
    ``kernels.pixel_math`` codes; ``shifts``: (n, 2) float32 sub-pixel shifts of the patterns
    onto the reference beam, or None; ``features``: a feature matrix already on the device
    (exact mode), whose rows are then read instead of preprocessed (inline executors only);
    ``blur``: the sigma (detector px) of the Gaussian each pattern is blurred by first, 0 for
    none (``gpu4d.blur``).
    """

    pixel_y: object
    pixel_x: object
    transform: int
    norm: int
    shifts: object = None
    features: object = None
    blur: float = 0.0

    @classmethod
    def raw(cls, shifts=None) -> "RowRecipe":
        """The recipe of passes that read only raw patterns (aligned by ``shifts`` if given)."""
        return cls(None, None, pixel_math.TRANSFORM_NONE, pixel_math.NORM_NONE, shifts)

    @property
    def n_features(self) -> int:
        return int(self.pixel_y.shape[0])


class Context:
    """A backend and a recipe, with the device copies and work buffers a pass reuses."""

    def __init__(self, backend, recipe: RowRecipe | None = None):
        self.backend = backend
        self.xp = backend.xp
        self.recipe = recipe
        self._on_device: dict[int, tuple[object, object]] = {}
        self._work: dict[str, object] = {}

    def end_pass(self) -> None:
        """Forget the device copies of the pass's own arrays (the recipe's stay): a pass's
        inputs (test matrices, labels) must not outlive it."""
        keep = {id(a) for a in (self.recipe.pixel_y, self.recipe.pixel_x, self.recipe.shifts)} if self.recipe else set()
        self._on_device = {key: value for key, value in self._on_device.items() if key in keep}

    def on_device(self, array):
        """``array`` on the backend's device, copied once per array object (until ``end_pass``)."""
        if array is None:
            return None
        key = id(array)
        cached = self._on_device.get(key)
        if cached is None or cached[0] is not array:
            cached = self._on_device[key] = (array, self.backend.to_device(array))
        return cached[1]

    def device_indices(self, indices):
        """Scan indices for indexing device arrays: a slice as it is, an index array copied."""
        return indices if isinstance(indices, slice) else self.backend.to_device(indices)

    def shifts(self, indices):
        shifts = self.on_device(self.recipe.shifts)
        return None if shifts is None else shifts[self.device_indices(indices)]

    def rows(self, part):
        """``(offset, rows)``: the part's preprocessed rows (float32, m columns), a chunk at a
        time; ``rows`` is a reused buffer, valid until the next chunk."""
        recipe = self.recipe
        if recipe.features is not None:
            yield 0, recipe.features[self.device_indices(part.indices)]
            return
        m = recipe.n_features
        chunk = part.size if self.backend.name != "cpu" else cpu_chunk_rows(m)
        work = self._buffer("rows", min(chunk, part.size), m)
        pixel_y, pixel_x = self.on_device(recipe.pixel_y), self.on_device(recipe.pixel_x)
        shifts = self.shifts(part.indices)
        taps = self.on_device(gaussian_taps(recipe.blur)) if recipe.blur else None
        for offset in range(0, part.size, chunk):
            stop = min(offset + chunk, part.size)
            rows = work[: stop - offset]
            self.backend.preprocess(
                part.raw[offset:stop], None if shifts is None else shifts[offset:stop],
                pixel_y, pixel_x, recipe.transform, recipe.norm, rows, taps=taps,
            )
            yield offset, rows

    def raw_rows(self, part):
        """The part's raw patterns as (b, qy * qx) rows, aligned onto the reference beam when
        the recipe has shifts (float32 then; the raw dtype otherwise); a reused buffer."""
        b = part.size
        shifts = None if self.recipe is None else self.shifts(part.indices)
        if shifts is None:
            return part.raw.reshape(b, -1)
        qy, qx = part.raw.shape[1:]
        every = self._work.get("every_pixel")
        if every is None or every[0].shape[0] != qy * qx:
            all_y, all_x = np.indices((qy, qx), dtype=np.int32)
            every = self._work["every_pixel"] = (
                self.backend.to_device(all_y.ravel()), self.backend.to_device(all_x.ravel())
            )
        out = self._buffer("raw", b, qy * qx)[:b]
        self.backend.preprocess(
            part.raw, shifts, every[0], every[1], pixel_math.TRANSFORM_NONE, pixel_math.NORM_NONE, out
        )
        return out

    def _buffer(self, name: str, rows: int, columns: int):
        """A float32 (>= rows, columns) work buffer, grown when a larger part needs it."""
        buffer = self._work.get(name)
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != columns:
            buffer = self._work[name] = self.xp.empty((rows, columns), np.float32)
        return buffer


class ContextCache:
    """One Context per recipe object (so device copies are made once per recipe), for one
    backend; the ``limit`` most recent are kept (a Dask worker serves run after run)."""

    def __init__(self, backend, limit: int = 8):
        self.backend = backend
        self.limit = limit
        self._contexts: dict[int, tuple[object, Context]] = {}

    def __call__(self, recipe=None) -> Context:
        cached = self._contexts.pop(id(recipe), None)
        if cached is None or cached[0] is not recipe:  # an id can be reused by a new object
            cached = (recipe, Context(self.backend, recipe))
        self._contexts[id(recipe)] = cached  # now the most recent
        while len(self._contexts) > self.limit:
            del self._contexts[next(iter(self._contexts))]
        return cached[1]
