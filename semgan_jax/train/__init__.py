"""Train states, pure train steps, checkpointing and the training loop."""
