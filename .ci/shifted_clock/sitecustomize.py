"""Start every Python process on this PYTHONPATH with its clock moved CLOCK_SHIFT_DAYS ahead.

CI runs the README's commands a second time under this, so a test or a code path that mixes a
fixed date with the real clock fails today rather than on the day the calendar reaches it.
time-machine moves what Python reads as the wall clock (time.time, datetime.now, date.today)
and leaves monotonic clocks and sleeps alone; libfaketime, which moves every clock of the
process, hung the Dagster CLI. Child processes inherit PYTHONPATH and the variable, so Dagster's
code servers and run workers and the tests' subprocesses all see the same day. The JVM, Node
(Azurite) and PostgreSQL keep the real clock.

gRPC is the one exception made: it turns Python's wall clock into absolute deadlines that its C
core compares with the real clock, so a moved clock stalls Dagster's code servers. Its modules
keep the real clock; nothing of ours runs through them.
"""

import datetime as _dt
import os as _os

_days = _os.environ.get("CLOCK_SHIFT_DAYS")
if _days:
    import importlib as _importlib
    import time as _time
    import types as _types

    import time_machine as _time_machine

    _shift = _dt.timedelta(days=int(_days))
    _time_machine.travel(_dt.datetime.now(_dt.UTC) + _shift, tick=True).start()

    _real_clock = _types.ModuleType("time")
    _real_clock.__dict__.update(_time.__dict__)
    _real_clock.time = lambda: _time.time() - _shift.total_seconds()
    for _name in (
        "grpc._cython.cygrpc",
        "grpc._channel",
        "grpc._server",
        "grpc._common",
        "grpc._utilities",
    ):
        try:
            _importlib.import_module(_name).time = _real_clock
        except ImportError:  # a Python without grpc (pip, the system Python)
            break
