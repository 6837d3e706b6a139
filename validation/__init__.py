"""Physics validation studies: each compares xsim with a reference and writes a CSV table and a PNG plot."""
