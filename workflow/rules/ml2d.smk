# ML2D rules (filled below)
