"""File formats, read and written here only: MRC (``mrc``), STAR/XMD/cryoSPARC metadata
(``star``, ``importers``, ``xmipp``, ``relion_model``), JSON records of a run (``jsonfile``),
particle and image access (``particles``: memory-mapped stacks, the images a STAR names) and
the intermediate files of a 2D classification (``classify2d``: models, sums, states,
assignments)."""
