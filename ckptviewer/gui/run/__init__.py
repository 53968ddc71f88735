"""The Run tab: a training run's checkpoints side by side (heatmap, charts, click-through), its work and tables."""
