"""Resume on another data-parallel world size: DeepSpeed's universal checkpoint, converted once.

A ZeRO-2 checkpoint holds one optimizer partition per saved rank, cut for that world size; DeepSpeed
refuses to load it on another one. `ds_to_universal` rewrites it as one file per parameter (fp32
weights, Adam moments, step), which `load_universal` re-partitions for any world size. The conversion
reads every saved rank's files, so it runs on one process where all of them are (rank 0, on a shared
filesystem or after downloading them from object storage) and is written to `<tag>/universal/`
atomically (a temp folder, then a rename): a later resume on yet another size reuses it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import time
from pathlib import Path

from trainer.checkpoint.layout import COMPLETE, UNIVERSAL, fsync_dir, write_durably

logger = logging.getLogger(__name__)


def universal_dir(tag_dir: Path) -> Path:
    return tag_dir / UNIVERSAL


def convert_to_universal(tag_dir: Path, workers: int = 1) -> Path:
    """The universal form of the checkpoint in tag_dir, converting it unless that was done before.
    Returns the folder to pass to `engine.load_checkpoint(folder.parent, tag=folder.name)`."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    out = universal_dir(tag_dir)
    if out.is_dir():
        return out
    tmp = tag_dir / f".{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(tag_dir), output_folder=str(tmp), num_extract_workers=workers,
        num_merge_workers=workers, keep_temp_folder=False, strict=True, inject_missing_state=True,
    )
    start = time.perf_counter()
    chatter = io.StringIO()  # the converter prints its progress; keep it for the debug log
    with contextlib.redirect_stdout(chatter):
        ds_to_universal(args)
    logger.debug("ds_to_universal output:\n%s", chatter.getvalue())
    (tag_dir / "latest_universal").unlink(missing_ok=True)  # the converter's own pointer, beside its output
    write_durably(tmp / COMPLETE, tag_dir.name)
    tmp.rename(out)
    fsync_dir(tag_dir)
    logger.info("converted %s to DeepSpeed's universal format in %.1f s", tag_dir, time.perf_counter() - start)
    return out
