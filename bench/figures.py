"""``python -m bench.figures --run RUN`` (or ``--sweep DIR``): redraw a finished run's figures,
``REPORT.md`` and ``report.html`` (the command line of :mod:`bench.report.figures`)."""

from __future__ import annotations

from bench.report.figures import main

if __name__ == "__main__":
    raise SystemExit(main())
