"""Background LoRA/QLoRA training: config, the recipe the child process runs, and the runner that starts it."""
