"""The command line (click). Thin: parse options, make one call into dr.operations, render the result."""
