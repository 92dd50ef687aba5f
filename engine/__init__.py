"""chattune's engine: models, inference, feedback store, training, export. No UI code here.

Heavy libraries (torch, transformers, peft, llama_cpp) are imported inside the functions that
need them, so importing this package stays fast.
"""

__version__ = "0.1.0"
