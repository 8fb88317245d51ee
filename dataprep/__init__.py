"""Image-text corpora to MDS shards (local or s3://) for TCL training; CLI: `tcl-dataprep` / `python -m dataprep`."""
