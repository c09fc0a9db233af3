"""Reading scans: files (through RosettaSciIO/HyperSpy, with gpu4d's own batch readers for the
formats whose frames it can read without loading the whole file), arrays and signals, as one
``Dataset`` that serves batches of raw patterns.

Modules: ``dataset`` (open_dataset, Dataset), ``readers`` (which RosettaSciIO reader a file
gets), ``scanshape`` (flat frame stacks given a scan shape), ``blockfile`` (.blo),
``mibfile`` and ``mib_format`` (Quantum Detectors .mib; the format is the live reader's too),
``arina`` (DECTRIS ARINA master files).
"""

from .dataset import Axis, Dataset, open_dataset

__all__ = ["Axis", "Dataset", "open_dataset"]
