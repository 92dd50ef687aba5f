"""`chattune bench`: our code paths against what users would otherwise run, in the same process and run.

common   trials, statistics, ratios, machine details, the table and the JSON
chat     time to first token and decode speed: our engines against raw llama_cpp.Llama / model.generate
swap     adapter apply, clear and switch against reloading the model with the adapter
train    our training recipe against a plain transformers Trainer + peft on the same examples
export   the time of each export stage and the file sizes
"""
