"""Training DINO with the official recipe: synthetic scenes, Hungarian matcher, set criterion,
the training loop and COCO evaluation."""
