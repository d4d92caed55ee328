"""`iqa/<dataset>`: image quality assessment, no-reference (nr) and full-reference (fr)."""
