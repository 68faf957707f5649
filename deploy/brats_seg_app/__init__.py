"""A MONAI Deploy application around the BraTS bundle: DICOM study in, DICOM Segmentation out."""
