"""One kernel body compiled twice: serially, and with ``parallel=True`` only for the calls that use it.

A ``parallel=True`` dispatcher runs Numba's parfor passes over the whole
body when it compiles, whichever branch a call takes: 0.4-1.7 s more per
kernel than the same body compiled serially (measured in a fresh install of
the default demo, whose window graph, node features and session graphs
paid ~7 s for prange loops that never ran in parallel, each demo process
running on one thread).  A kernel whose last argument is its ``parallel``
flag (``if parallel: prange ... else: range ...``) can instead be
decorated with :func:`twin`: calls with ``parallel`` false go to a serial
compilation of the same body, and the parallel one is compiled (and
cached) the first time a call asks for it.  Both run the same code on the
same inputs, so results do not depend on which one ran.

A prange loop's index is unsigned in Numba's parfor and a range loop's is
signed, so a row function called from both branches compiles twice unless
the prange branch passes ``np.int64(i)``, as the twinned kernels do.
"""
from __future__ import annotations

import types

import numba as nb

from .. import config


def named(fn, name, **rebound):
    """``fn`` under another name: a second dispatcher of the same code gets its own cache files.
    ``rebound``: globals the copy sees in place of its module's (a snapshot of the module's
    globals, taken now, with these replaced), e.g. a helper compiled as a call instead of inlined."""
    glob = dict(fn.__globals__, **rebound) if rebound else fn.__globals__
    g = types.FunctionType(fn.__code__, glob, name, fn.__defaults__, fn.__closure__)
    g.__qualname__ = name
    g.__doc__ = fn.__doc__
    return g


class Twin:
    """Two dispatchers of one body; ``twin(*args)`` calls ``parallel`` when ``args[-1]`` is true,
    else ``serial``.  The parallel dispatcher keeps the function's own name (and cache files)."""

    def __init__(self, fn, **options):
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.parallel = nb.njit(cache=True, parallel=True, **options)(fn)
        self.serial = nb.njit(cache=True, **options)(named(fn, fn.__name__ + "_serial"))

    def __call__(self, *args):
        return (self.parallel if args[-1] else self.serial)(*args)


def twin(**options):
    """Decorator: :class:`Twin` of the function (``options`` go to both ``njit`` calls)."""
    return lambda fn: Twin(fn, **options)


def use_threads(n_rows) -> bool:
    """Whether a kernel over ``n_rows`` rows should take its parallel path: enough rows to pay
    for starting the threads (``config.cpu_serial_rows``) and more than one Numba thread to run
    them (a process on one thread, as each of the demo's and the trainers' are, runs serially)."""
    return n_rows >= config.cpu_serial_rows and nb.get_num_threads() > 1
