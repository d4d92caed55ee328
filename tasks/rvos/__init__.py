"""`rvos/<dataset>`: referring video object segmentation (ReferFormer-style), scored by DAVIS J&F."""
