"""Physics tables shipped with xsim (see build_tables.py for how they are made)."""
