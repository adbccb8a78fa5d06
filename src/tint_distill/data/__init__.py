"""Data sources, episode sampling and image grids: plain Python, no Kedro."""
