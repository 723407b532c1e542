"""Training of priors on the user's own DICOM/NIfTI/PNG data (no Qt; torch and MONAI imported here).

`data` turns files into normalised square slices, `augment` holds the data-level (MONAI) and the
differentiable (discriminator-side) augmentations, `discriminator` the StyleGAN2 ResNet
discriminator, and `stylegan2` the training loop with exact resume.
"""
