"""napari dock widgets: the BRGM reconstruction form (thin: the engine does the work)."""

from napari_brgm.widgets.reconstruction import ReconstructionWidget

__all__ = ["ReconstructionWidget"]
