"""The vis suite: video instance segmentation with a per-frame query head, scored by YouTube-VIS AP/AR."""
