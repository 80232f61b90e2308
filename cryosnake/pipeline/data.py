"""Jobs of the data rules: demo simulation and particle import."""

from __future__ import annotations

import numpy as np

from cryosnake.atomic import write_json
from cryosnake.io.jsonfile import read_json

# The simulator and the importers (pandas, starfile, scipy.ndimage) are imported by the jobs
# that use them: every M-step reads the import summary (issue 16).


def demo_job(demo_config: dict, folder) -> None:
    """Simulate the demo dataset into ``folder`` (see :mod:`cryosnake.demo`)."""
    from cryosnake import demo

    settings = demo.DemoSettings.from_config(demo_config)
    demo.write(settings, folder)
    print(f"demo: {settings.n_particles} particles of {settings.box} px at {settings.sampling} "
          f"Å/px, {settings.views} views, SNR {settings.snr}, CTF {settings.ctf}")


def import_job(source, out_star, out_summary, *, sampling=None, require_ctf=False) -> dict:
    """Import ``source`` (any supported format) into the canonical STAR and a summary JSON."""
    from cryosnake import ctf
    from cryosnake.io import importers, star

    options = importers.ImportOptions(sampling=sampling, require_ctf=require_ctf)
    particles, optics = importers.load(source, options)
    table = star.merge_optics(particles, optics)
    has_ctf = not ctf.missing_columns(table)
    pixel_sizes = np.unique(table["rlnImagePixelSize"].astype(float).round(5))
    summary = {
        "source": str(source),
        "format": importers.detect_format(str(source)),
        "n_particles": int(len(particles)),
        "box": int(optics["rlnImageSize"].iloc[0]),
        "sampling": float(pixel_sizes[0]),
        "optics_groups": int(len(optics)),
        "has_ctf": bool(has_ctf),
        # what the input says (None: nothing); ml2d.phase_flipped: auto uses it
        "phase_flipped": (bool(table[ctf.PHASE_FLIP_COLUMN].astype(int).max())
                          if ctf.PHASE_FLIP_COLUMN in table else None),
    }
    if len(pixel_sizes) > 1:
        print(f"warning: several pixel sizes {pixel_sizes.tolist()} Å/px; using "
              f"{pixel_sizes[0]} for Å conversions")
    star.write_particles(out_star, particles, optics)
    write_json(out_summary, summary)
    print(f"imported {summary['n_particles']} particles of {summary['box']} px at "
          f"{summary['sampling']} Å/px from {source} ({summary['format']}); CTF: {has_ctf}")
    return summary


def read_summary(path) -> dict:
    """The import summary (n_particles, box, sampling, has_ctf, ...)."""
    return read_json(path)
