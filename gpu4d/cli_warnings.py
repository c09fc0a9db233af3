"""Warnings on the command line: one ``gpu4d: warning: ...`` line each, said once, in words.

Python prints a warning as two lines, the second the source line that raised it, which means
nothing to a user of the CLI. Here each warning becomes one line; library warnings that are
about the libraries themselves (deprecations, future changes) are dropped; the ones that say
something about the data (scikit-learn finding fewer distinct clusters than asked for, numpy
dividing by zero) are put in gpu4d's words.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings

#: (pattern of "Category: message", gpu4d's words); ``{0}``, ``{1}`` are the pattern's groups.
TRANSLATIONS = [
    (
        r"Number of distinct clusters \((\d+)\) found smaller than n_clusters \((\d+)\)",
        "KMeans found only {0} distinct patterns for the {1} clusters asked for (many patterns "
        "are identical after masking and normalizing); some clusters are empty",
    ),
    (
        r"^ConvergenceWarning: ",
        "KMeans stopped at --max-iter before converging; the labels may change with a larger "
        "--max-iter",
    ),
]
#: Categories that speak of the libraries, not of the data or the run.
SILENCED = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning)


def translate(message: str, category: type) -> str | None:
    """The one line to print for a warning, or None to drop it."""
    if issubclass(category, SILENCED):
        return None
    text = " ".join(message.split())
    for pattern, words in TRANSLATIONS:
        found = re.search(pattern, f"{category.__name__}: {text}")
        if found:
            return words.format(*found.groups())
    return text


@contextlib.contextmanager
def one_line_warnings(stream=None):
    """Within the block, print each distinct warning once, as one line on ``stream`` (stderr)."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = translate(str(message), category)
        if text is None or text in seen:
            return
        seen.add(text)
        print(f"gpu4d: warning: {text}", file=stream or sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # de-duplicated above, by what is printed
        warnings.showwarning = show
        yield
