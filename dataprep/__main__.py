"""`python -m dataprep ...` (the same as the `tcl-dataprep` console script)."""

from dataprep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
