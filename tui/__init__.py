"""chattune's terminal UI (Textual). It talks to engine/ only through its small API and never
imports torch or llama_cpp itself."""
