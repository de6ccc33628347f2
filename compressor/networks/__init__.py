"""Networks this package defines itself (engine layer): ShrinkCNN, built by ``compress nas``."""
