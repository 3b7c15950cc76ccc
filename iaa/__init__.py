"""Deep metric learning with Intra-class Adaptive Augmentation (IAA), Fu et al., TMM 2022."""

__version__ = "0.1.0"
