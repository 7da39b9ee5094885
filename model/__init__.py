"""Pure machine learning for HeatPrompt: encoders, the heatmap-prompted SAM heads,
labels, data, training, evaluation and prediction. No database, no UI."""
