"""What crosses the program's edges: checkpoints, images, the model's input batch, class names and
the results files."""
