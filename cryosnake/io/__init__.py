"""File formats, read and written here only: MRC (``mrc``), STAR/XMD/cryoSPARC metadata
(``star``, ``importers``, ``xmipp``, ``relion_model``), JSON records of a run (``jsonfile``) and
particle and image access (``particles``: memory-mapped stacks, the images a STAR names)."""
