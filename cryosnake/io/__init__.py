"""File formats: MRC (``mrc``), STAR/XMD/cryoSPARC metadata (``star``, ``importers``) and
memory-mapped particle access (``particles``)."""
