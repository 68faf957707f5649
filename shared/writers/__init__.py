"""Writing inference outputs: file names and overlay pictures."""
