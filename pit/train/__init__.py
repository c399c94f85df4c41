"""Training: examples with their loss masks, batches by recipe stage, and the loop."""
