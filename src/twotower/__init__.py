"""twotower: two-tower (DSSM) retrieval models with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
