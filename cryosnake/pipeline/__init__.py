"""Job-level functions behind the Snakemake rules: each takes file paths and settings, reads its
inputs, calls the numerics and writes its outputs atomically. The scripts in ``scripts/`` only
unpack the ``snakemake`` object and call one of these, so every job can also be run (and
tested) without Snakemake."""
