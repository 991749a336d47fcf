"""Statistics: pandas in, tidy pandas out."""
