"""cryosnake: cryo-EM single-particle processing as a Snakemake workflow.

Numerics live here; the Snakemake rules in ``workflow/rules`` call thin scripts in
``scripts/`` that import this package.
"""

__version__ = "0.1.0"
