"""What two or more suites share: the training loop, recipes, heads, metrics, dense pyramids, COCO
evaluation, text embeddings. A suite never imports another suite; it imports from here."""
