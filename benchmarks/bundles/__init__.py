"""One module per bundle: ``rows(quick, repeats, workdir)`` returns its table's rows."""
