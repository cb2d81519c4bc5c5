"""The miniature experiment: the small base editor, its pretraining, the ablation."""
