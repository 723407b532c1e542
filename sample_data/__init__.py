"""Sample images shipped with napari-brgm (see README.md; regenerate with make_samples.py)."""
