"""Dataset discovery, validation, splits and datasets for the studies' on-disk layouts."""
