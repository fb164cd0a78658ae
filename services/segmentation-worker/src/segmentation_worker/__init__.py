"""segmentation-worker: turns activity into segments and predictions."""
